using System.Globalization;
using System.Text;
using OpenTelemetry.Metrics;

namespace Cluster.Telemetry;

/// <summary>
/// Renders OpenTelemetry metrics in the Prometheus text exposition format 0.0.4: HELP and TYPE lines,
/// counters with a <c>_total</c> suffix, histograms as cumulative <c>_bucket{le=...}</c> series ending
/// in <c>+Inf</c> plus <c>_sum</c> and <c>_count</c>. OpenTelemetry reports per-bucket counts; Prometheus
/// buckets are cumulative, so counts are summed as they are written.
/// </summary>
public static class PrometheusTextWriter
{
    public static void Write(StringBuilder sb, Metric metric)
    {
        var name = SanitizeName(metric.Name);
        var type = metric.MetricType switch
        {
            MetricType.LongSum or MetricType.DoubleSum => "counter",
            MetricType.Histogram => "histogram",
            _ => "gauge", // gauges and up-down counters
        };
        // Counters are named with _total in the family, TYPE and HELP lines alike (format 0.0.4).
        var family = type == "counter" && !name.EndsWith("_total", StringComparison.Ordinal) ? name + "_total" : name;
        if (!string.IsNullOrEmpty(metric.Description)) sb.Append("# HELP ").Append(family).Append(' ').Append(EscapeHelp(metric.Description)).Append('\n');
        sb.Append("# TYPE ").Append(family).Append(' ').Append(type).Append('\n');

        foreach (ref readonly var point in metric.GetMetricPoints())
        {
            var labels = Labels(point);
            switch (metric.MetricType)
            {
                case MetricType.LongSum:
                case MetricType.LongSumNonMonotonic:
                    Sample(sb, family, labels, null, point.GetSumLong());
                    break;
                case MetricType.DoubleSum:
                case MetricType.DoubleSumNonMonotonic:
                    Sample(sb, family, labels, null, point.GetSumDouble());
                    break;
                case MetricType.LongGauge:
                    Sample(sb, family, labels, null, point.GetGaugeLastValueLong());
                    break;
                case MetricType.DoubleGauge:
                    Sample(sb, family, labels, null, point.GetGaugeLastValueDouble());
                    break;
                case MetricType.Histogram:
                    long cumulative = 0;
                    foreach (var bucket in point.GetHistogramBuckets())
                    {
                        cumulative += bucket.BucketCount;
                        Sample(sb, family + "_bucket", labels, ("le", FormatValue(bucket.ExplicitBound)), cumulative);
                    }
                    Sample(sb, family + "_sum", labels, null, point.GetHistogramSum());
                    Sample(sb, family + "_count", labels, null, point.GetHistogramCount());
                    break;
            }
        }
    }

    private static List<(string Key, string Value)> Labels(in MetricPoint point)
    {
        var labels = new List<(string, string)>();
        foreach (var tag in point.Tags) labels.Add((SanitizeName(tag.Key), Convert.ToString(tag.Value, CultureInfo.InvariantCulture) ?? ""));
        return labels;
    }

    private static void Sample(StringBuilder sb, string name, List<(string Key, string Value)> labels, (string Key, string Value)? extra, double value)
    {
        sb.Append(name);
        if (labels.Count > 0 || extra is not null)
        {
            sb.Append('{');
            bool first = true;
            foreach (var (k, v) in extra is { } e ? labels.Append(e) : labels)
            {
                if (!first) sb.Append(',');
                first = false;
                sb.Append(k).Append("=\"").Append(EscapeLabel(v)).Append('"');
            }
            sb.Append('}');
        }
        sb.Append(' ').Append(FormatValue(value)).Append('\n');
    }

    /// <summary>Go-style float text: +Inf, -Inf, NaN, otherwise the shortest round-trip form.</summary>
    public static string FormatValue(double v) =>
        double.IsPositiveInfinity(v) ? "+Inf" : double.IsNegativeInfinity(v) ? "-Inf" : double.IsNaN(v) ? "NaN" : v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Metric and label names must match [a-zA-Z_:][a-zA-Z0-9_:]*; anything else becomes '_'.</summary>
    public static string SanitizeName(string name)
    {
        var chars = name.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            char c = chars[i];
            bool ok = c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or '_' or ':' || (i > 0 && c is >= '0' and <= '9');
            if (!ok) chars[i] = '_';
        }
        return chars.Length == 0 ? "_" : new string(chars);
    }

    /// <summary>Label values escape backslash, double quote and newline.</summary>
    public static string EscapeLabel(string v) => v.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n");

    /// <summary>HELP text escapes backslash and newline.</summary>
    public static string EscapeHelp(string v) => v.Replace("\\", "\\\\").Replace("\n", "\\n");
}
