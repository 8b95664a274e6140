using System.Globalization;
using Cluster.Engine.Evaluation;

namespace LlmCtl;

/// <summary>An SVG line plot of perplexity per position bucket, one curve per policy (log y axis,
/// one x step per bucket), drawn by <see cref="SvgLinePlot"/>.</summary>
internal static class PerplexityPlot
{
    public static string Svg(IReadOnlyList<StreamingPerplexityResult> results, string title)
    {
        var buckets = results.SelectMany(r => r.Buckets).Select(b => (b.Start, b.End)).Distinct().OrderBy(b => b.Start).ToList();
        var series = results.Select(r => new PlotSeries(r.Policy,
            r.Buckets.Select(b => ((double)buckets.IndexOf((b.Start, b.End)), b.Perplexity)).ToList())).ToList();
        var ticks = buckets.Select((b, i) => ((double)i, $"{Label(b.Start)}-{Label(b.End)}")).ToList();
        return SvgLinePlot.Svg(title, series, new PlotAxes("position of the scored token", "perplexity (log scale)", LogY: true, XTicks: ticks, Markers: true));
    }

    private static string Label(int tokens) => tokens >= 1024 && tokens % 1024 == 0 ? $"{tokens / 1024}k" : tokens.ToString(CultureInfo.InvariantCulture);
}
