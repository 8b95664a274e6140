using System.Globalization;
using System.Net;
using System.Text;
using Cluster.Engine.Evaluation;

namespace LlmCtl;

/// <summary>An SVG line plot of perplexity per position bucket, one curve per policy (log y axis,
/// one x step per bucket), written by hand: no plotting package restores here.</summary>
internal static class PerplexityPlot
{
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

    public static string Svg(IReadOnlyList<StreamingPerplexityResult> results, string title)
    {
        var buckets = results.SelectMany(r => r.Buckets).Select(b => (b.Start, b.End)).Distinct().OrderBy(b => b.Start).ToList();
        var values = results.SelectMany(r => r.Buckets).Select(b => b.Perplexity).Where(double.IsFinite).ToList();
        double lo = Math.Log10(values.Min()), hi = Math.Log10(values.Max());
        if (hi - lo < 0.1) (lo, hi) = (lo - 0.05, hi + 0.05);
        lo = Math.Floor(lo * 10) / 10;
        hi = Math.Ceiling(hi * 10) / 10;
        const int W = 760, H = 440, L = 70, R = 230, T = 40, B = 60;
        double X(int i) => L + (buckets.Count == 1 ? 0.5 : (double)i / (buckets.Count - 1)) * (W - L - R);
        double Y(double ppl) => T + (hi - Math.Log10(ppl)) / (hi - lo) * (H - T - B);
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);

        var svg = new StringBuilder();
        svg.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">");
        svg.AppendLine($"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        svg.AppendLine($"<text x=\"{W / 2 - R / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{WebUtility.HtmlEncode(title)}</text>");
        // Y grid at 1-2-5 steps of the log axis.
        foreach (var decade in Enumerable.Range((int)Math.Floor(lo) - 1, (int)Math.Ceiling(hi) - (int)Math.Floor(lo) + 2))
            foreach (var m in new[] { 1, 2, 5 })
            {
                double v = m * Math.Pow(10, decade), lv = Math.Log10(v);
                if (lv < lo || lv > hi) continue;
                svg.AppendLine($"<line x1=\"{L}\" x2=\"{W - R}\" y1=\"{F(Y(v))}\" y2=\"{F(Y(v))}\" stroke=\"#ddd\"/>");
                svg.AppendLine($"<text x=\"{L - 6}\" y=\"{F(Y(v) + 4)}\" text-anchor=\"end\">{v.ToString("G4", CultureInfo.InvariantCulture)}</text>");
            }
        for (int i = 0; i < buckets.Count; i++)
        {
            svg.AppendLine($"<line x1=\"{F(X(i))}\" x2=\"{F(X(i))}\" y1=\"{T}\" y2=\"{H - B}\" stroke=\"#eee\"/>");
            svg.AppendLine($"<text x=\"{F(X(i))}\" y=\"{H - B + 18}\" text-anchor=\"middle\">{Label(buckets[i].Start)}-{Label(buckets[i].End)}</text>");
        }
        svg.AppendLine($"<rect x=\"{L}\" y=\"{T}\" width=\"{W - L - R}\" height=\"{H - T - B}\" fill=\"none\" stroke=\"#444\"/>");
        svg.AppendLine($"<text x=\"{(L + W - R) / 2}\" y=\"{H - 18}\" text-anchor=\"middle\">position of the scored token</text>");
        svg.AppendLine($"<text transform=\"translate(18 {(T + H - B) / 2}) rotate(-90)\" text-anchor=\"middle\">perplexity (log scale)</text>");
        for (int p = 0; p < results.Count; p++)
        {
            var color = Colors[p % Colors.Length];
            var dash = p >= Colors.Length ? " stroke-dasharray=\"5 3\"" : "";
            var points = results[p].Buckets.Where(b => double.IsFinite(b.Perplexity))
                .Select(b => $"{F(X(buckets.IndexOf((b.Start, b.End))))},{F(Y(b.Perplexity))}").ToList();
            svg.AppendLine($"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{string.Join(' ', points)}\"/>");
            foreach (var pt in points) svg.AppendLine($"<circle cx=\"{pt.Split(',')[0]}\" cy=\"{pt.Split(',')[1]}\" r=\"3\" fill=\"{color}\"/>");
            int ly = T + 10 + p * 20;
            svg.AppendLine($"<line x1=\"{W - R + 15}\" x2=\"{W - R + 40}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>");
            svg.AppendLine($"<text x=\"{W - R + 46}\" y=\"{ly + 4}\">{WebUtility.HtmlEncode(results[p].Policy)}</text>");
        }
        svg.AppendLine("</svg>");
        return svg.ToString();
    }

    private static string Label(int tokens) => tokens >= 1024 && tokens % 1024 == 0 ? $"{tokens / 1024}k" : tokens.ToString(CultureInfo.InvariantCulture);
}
