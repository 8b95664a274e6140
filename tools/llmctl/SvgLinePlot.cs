using System.Globalization;
using System.Net;
using System.Text;

namespace LlmCtl;

/// <summary>One curve of a <see cref="SvgLinePlot"/>: its legend name and its points in data units.</summary>
internal sealed record PlotSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>
/// How a <see cref="SvgLinePlot"/> draws its axes. <paramref name="XTicks"/>: labelled x positions (null:
/// about 8 evenly spaced ones over the data); <paramref name="XMarkers"/>: labelled vertical lines
/// (e.g. the end of a warm-up); <paramref name="Markers"/>: a dot on every point (for few points).
/// </summary>
internal sealed record PlotAxes(string XLabel, string YLabel, bool LogY = false, IReadOnlyList<(double X, string Label)>? XTicks = null,
    IReadOnlyList<(double X, string Label)>? XMarkers = null, bool Markers = false, bool YFromZero = false);

/// <summary>An SVG line plot, one curve per series, linear or log y axis, legend on the right; written by
/// hand: no plotting package restores here. Used by `llmctl perplexity` and `llmctl bench soak`.</summary>
internal static class SvgLinePlot
{
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

    public static string Svg(string title, IReadOnlyList<PlotSeries> series, PlotAxes axes)
    {
        var all = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!axes.LogY || p.Y > 0)).ToList();
        if (all.Count == 0) all.Add((0, 1));
        double xLo = all.Min(p => p.X), xHi = all.Max(p => p.X);
        if (axes.XTicks is { Count: > 0 } ticks) (xLo, xHi) = (Math.Min(xLo, ticks.Min(t => t.X)), Math.Max(xHi, ticks.Max(t => t.X)));
        double Ty(double y) => axes.LogY ? Math.Log10(y) : y;
        double lo = all.Min(p => Ty(p.Y)), hi = all.Max(p => Ty(p.Y));
        if (axes.YFromZero && !axes.LogY) lo = Math.Min(lo, 0);
        if (axes.LogY)
        {
            if (hi - lo < 0.1) (lo, hi) = (lo - 0.05, hi + 0.05);
            lo = Math.Floor(lo * 10) / 10;
            hi = Math.Ceiling(hi * 10) / 10;
        }
        else
        {
            double step = NiceStep(hi - lo);
            lo = Math.Floor(lo / step) * step;
            hi = Math.Max(lo + step, Math.Ceiling(hi / step) * step);
        }
        const int W = 760, H = 440, L = 70, R = 230, T = 40, B = 60;
        double X(double x) => L + (xHi == xLo ? 0.5 : (x - xLo) / (xHi - xLo)) * (W - L - R);
        double Y(double y) => T + (hi - Ty(y)) / (hi - lo) * (H - T - B);
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);

        var svg = new StringBuilder();
        svg.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">");
        svg.AppendLine($"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        svg.AppendLine($"<text x=\"{W / 2 - R / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{WebUtility.HtmlEncode(title)}</text>");
        foreach (var v in YGrid(lo, hi, axes.LogY))
        {
            svg.AppendLine($"<line x1=\"{L}\" x2=\"{W - R}\" y1=\"{F(Y(v))}\" y2=\"{F(Y(v))}\" stroke=\"#ddd\"/>");
            svg.AppendLine($"<text x=\"{L - 6}\" y=\"{F(Y(v) + 4)}\" text-anchor=\"end\">{v.ToString("G4", CultureInfo.InvariantCulture)}</text>");
        }
        var xTicks = axes.XTicks ?? XGrid(xLo, xHi);
        foreach (var (x, label) in xTicks)
        {
            svg.AppendLine($"<line x1=\"{F(X(x))}\" x2=\"{F(X(x))}\" y1=\"{T}\" y2=\"{H - B}\" stroke=\"#eee\"/>");
            svg.AppendLine($"<text x=\"{F(X(x))}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{WebUtility.HtmlEncode(label)}</text>");
        }
        foreach (var (x, label) in axes.XMarkers ?? [])
        {
            svg.AppendLine($"<line x1=\"{F(X(x))}\" x2=\"{F(X(x))}\" y1=\"{T}\" y2=\"{H - B}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>");
            svg.AppendLine($"<text x=\"{F(X(x) + 4)}\" y=\"{T + 14}\" fill=\"#555\">{WebUtility.HtmlEncode(label)}</text>");
        }
        svg.AppendLine($"<rect x=\"{L}\" y=\"{T}\" width=\"{W - L - R}\" height=\"{H - T - B}\" fill=\"none\" stroke=\"#444\"/>");
        svg.AppendLine($"<text x=\"{(L + W - R) / 2}\" y=\"{H - 18}\" text-anchor=\"middle\">{WebUtility.HtmlEncode(axes.XLabel)}</text>");
        svg.AppendLine($"<text transform=\"translate(18 {(T + H - B) / 2}) rotate(-90)\" text-anchor=\"middle\">{WebUtility.HtmlEncode(axes.YLabel)}</text>");
        for (int p = 0; p < series.Count; p++)
        {
            var color = Colors[p % Colors.Length];
            var dash = p >= Colors.Length ? " stroke-dasharray=\"5 3\"" : "";
            var points = series[p].Points.Where(pt => double.IsFinite(pt.X) && double.IsFinite(pt.Y) && (!axes.LogY || pt.Y > 0))
                .Select(pt => (X: F(X(pt.X)), Y: F(Y(pt.Y)))).ToList();
            svg.AppendLine($"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{string.Join(' ', points.Select(pt => $"{pt.X},{pt.Y}"))}\"/>");
            if (axes.Markers) foreach (var pt in points) svg.AppendLine($"<circle cx=\"{pt.X}\" cy=\"{pt.Y}\" r=\"3\" fill=\"{color}\"/>");
            int ly = T + 10 + p * 20;
            svg.AppendLine($"<line x1=\"{W - R + 15}\" x2=\"{W - R + 40}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>");
            svg.AppendLine($"<text x=\"{W - R + 46}\" y=\"{ly + 4}\">{WebUtility.HtmlEncode(series[p].Name)}</text>");
        }
        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    /// <summary>Grid values: 1-2-5 steps of each decade on a log axis, about 6 round steps on a linear one.</summary>
    private static IEnumerable<double> YGrid(double lo, double hi, bool log)
    {
        if (!log)
        {
            double step = NiceStep(hi - lo);
            for (double v = lo; v <= hi + step / 2; v += step) yield return Math.Round(v / step) * step;
            yield break;
        }
        for (int decade = (int)Math.Floor(lo) - 1; decade <= (int)Math.Ceiling(hi); decade++)
            foreach (var m in new[] { 1, 2, 5 })
            {
                double v = m * Math.Pow(10, decade), lv = Math.Log10(v);
                if (lv >= lo && lv <= hi) yield return v;
            }
    }

    private static List<(double X, string Label)> XGrid(double lo, double hi)
    {
        double step = NiceStep((hi - lo) * 6 / 8);
        var ticks = new List<(double, string)>();
        for (double v = Math.Ceiling(lo / step) * step; v <= hi + step * 1e-9; v += step)
            ticks.Add((v, v.ToString("G4", CultureInfo.InvariantCulture)));
        return ticks;
    }

    /// <summary>A 1, 2 or 5 times a power of ten that cuts <paramref name="range"/> into about 6 steps.</summary>
    private static double NiceStep(double range)
    {
        if (!(range > 0)) return 1;
        double raw = range / 6, p = Math.Pow(10, Math.Floor(Math.Log10(raw))), m = raw / p;
        return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
    }
}
