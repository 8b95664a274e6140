using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace Cluster.Telemetry;

/// <summary>
/// One service's OpenTelemetry meter provider wired to a <see cref="PrometheusPullExporter"/> with
/// cumulative temporality (Prometheus counters and histograms never reset between scrapes).
/// </summary>
public sealed class MetricsRegistry : IDisposable
{
    private readonly MeterProvider _provider;
    private readonly PrometheusPullExporter _exporter = new();

    /// <param name="meterNames">Meters to export (wildcards allowed, e.g. "LlmCluster.*").</param>
    public MetricsRegistry(params string[] meterNames)
    {
        var reader = new BaseExportingMetricReader(_exporter) { TemporalityPreference = MetricReaderTemporalityPreference.Cumulative };
        _provider = Sdk.CreateMeterProviderBuilder().AddMeter(meterNames).AddReader(reader).Build();
    }

    /// <summary>The current values of every instrument as Prometheus text.</summary>
    public string Scrape() => _exporter.Scrape();

    public void Dispose() => _provider.Dispose();
}
