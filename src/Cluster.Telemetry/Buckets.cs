using System.Diagnostics.Metrics;

namespace Cluster.Telemetry;

/// <summary>Histogram boundaries that resolve what operators look at.</summary>
public static class Buckets
{
    /// <summary>1 ms to 60 s: inter-token gaps of a few ms up to minute-long requests (vLLM uses a similar span).</summary>
    public static readonly double[] LatencySeconds =
        [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60];

    /// <summary>Token counts from 1 to 128k in powers of two.</summary>
    public static readonly double[] Tokens = Enumerable.Range(0, 18).Select(i => Math.Pow(2, i)).ToArray();

    /// <summary>A latency histogram in seconds with <see cref="LatencySeconds"/> boundaries (through
    /// instrument advice, which the OpenTelemetry SDK honours without a view).</summary>
    public static Histogram<double> CreateLatencyHistogram(this Meter meter, string name, string description) =>
        meter.CreateHistogram(name, "s", description, tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencySeconds });

    public static Histogram<double> CreateTokenHistogram(this Meter meter, string name, string description) =>
        meter.CreateHistogram(name, "{token}", description, tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = Tokens });
}
