namespace LlmCtl.Load;

/// <summary>Percentiles, throughput and goodput of one load run (successful requests only, except the error count).</summary>
public sealed class LoadReport
{
    public LoadReport(LoadOptions options, IReadOnlyList<RequestSample> samples, double wallSeconds)
    {
        Options = options;
        Samples = samples;
        WallSeconds = wallSeconds;
        var ok = samples.Where(s => s.Error is null).ToList();
        Succeeded = ok.Count;
        Ttft = Percentiles.Of(ok.Select(s => s.TtftSeconds));
        Tpot = Percentiles.Of(ok.Where(s => s.TpotSeconds is not null).Select(s => s.TpotSeconds!.Value));
        Itl = Percentiles.Of(ok.SelectMany(s => s.ItlSeconds));
        E2e = Percentiles.Of(ok.Select(s => s.E2eSeconds));
        OutputTokens = ok.Sum(s => s.OutputTokens);
        // DistServe (Zhong et al., OSDI 2024): goodput counts requests that meet both the TTFT and
        // the TPOT objective; failed requests meet neither.
        int good = ok.Count(s => s.TtftSeconds <= options.TtftSloSeconds && (s.TpotSeconds ?? 0) <= options.TpotSloSeconds);
        GoodputShare = samples.Count > 0 ? (double)good / samples.Count : 0;
        GoodputRequestsPerSecond = good / wallSeconds;
    }

    public LoadOptions Options { get; }
    public IReadOnlyList<RequestSample> Samples { get; }
    public double WallSeconds { get; }
    public int Succeeded { get; }
    public int Failed => Samples.Count - Succeeded;
    public Percentiles Ttft { get; }
    public Percentiles Tpot { get; }
    public Percentiles Itl { get; }
    public Percentiles E2e { get; }
    public int OutputTokens { get; }
    public double OutputTokensPerSecond => OutputTokens / WallSeconds;
    public double RequestsPerSecond => Succeeded / WallSeconds;
    /// <summary>Share of all requests meeting both SLOs (0..1).</summary>
    public double GoodputShare { get; }
    public double GoodputRequestsPerSecond { get; }
}

/// <summary>
/// p50/p90/p99 by nearest rank (the sample at rank ceil(q n)): always a measured value, and the
/// same rank rule as Prometheus's histogram_quantile uses to pick a bucket.
/// </summary>
public sealed record Percentiles(int Count, double P50, double P90, double P99)
{
    public static Percentiles Of(IEnumerable<double> values)
    {
        var sorted = values.Where(v => !double.IsNaN(v)).Order().ToArray();
        return new Percentiles(sorted.Length, At(sorted, 0.5), At(sorted, 0.9), At(sorted, 0.99));
    }

    public static double At(double[] sorted, double q) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
}
