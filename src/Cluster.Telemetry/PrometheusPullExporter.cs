using System.Text;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace Cluster.Telemetry;

/// <summary>
/// A pull exporter (the Prometheus exporter package is missing from this mirror): a scrape asks the
/// SDK's reader to collect through the <see cref="Collect"/> delegate it hands us, and the reader
/// calls <see cref="Export"/> with the metrics, which we render as Prometheus text on the spot.
/// Calling the reader's Collect() directly would return false for a pull-only exporter.
/// </summary>
[ExportModes(ExportModes.Pull)]
public sealed class PrometheusPullExporter : BaseExporter<Metric>, IPullMetricExporter
{
    private readonly object _scrapeLock = new();
    private StringBuilder? _target;

    /// <summary>Set by the SDK's metric reader when the exporter is registered.</summary>
    public Func<int, bool>? Collect { get; set; }

    /// <summary>Collects every instrument now and returns the text exposition (format 0.0.4).</summary>
    public string Scrape(int timeoutMilliseconds = 5000)
    {
        lock (_scrapeLock)
        {
            var collect = Collect ?? throw new InvalidOperationException("the exporter is not registered with a MeterProvider");
            _target = new StringBuilder();
            try
            {
                if (!collect(timeoutMilliseconds)) throw new TimeoutException($"metric collection did not finish in {timeoutMilliseconds} ms");
                return _target.ToString();
            }
            finally
            {
                _target = null;
            }
        }
    }

    public override ExportResult Export(in Batch<Metric> batch)
    {
        var target = _target;
        if (target is null) return ExportResult.Failure; // only scrapes collect
        foreach (var metric in batch) PrometheusTextWriter.Write(target, metric);
        return ExportResult.Success;
    }
}
