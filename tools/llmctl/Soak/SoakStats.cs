namespace LlmCtl.Soak;

/// <summary>
/// Whether one service's memory stayed flat after the warm-up. <see cref="WarmMiB"/> is the mean RSS over
/// the first window after the warm-up, <see cref="EndMiB"/> the mean over the last window;
/// <see cref="GrowthPercent"/> compares them. <see cref="FitGrowthPercent"/> is the growth a least-squares
/// line through every post-warm-up sample predicts over that span (its slope times the span), which a
/// single spike at either end cannot fake or hide. Flat: both at most the tolerance.
/// </summary>
internal sealed record MemoryVerdict(double WarmMiB, double EndMiB, double GrowthPercent, double SlopeMiBPerMinute, double FitGrowthPercent, bool Flat);

/// <summary>Latency percentiles of the requests that ended in one time window of the run.</summary>
internal sealed record LatencyWindow(double StartSeconds, int Requests, long Tokens, int Errors,
    double TtftP50Ms, double TtftP99Ms, double TpotP50Ms, double TpotP99Ms);

/// <summary>The numbers `llmctl bench soak` reports: percentiles, windows, linear fit, flatness.</summary>
internal static class SoakStats
{
    /// <summary>
    /// The nearest-rank percentile (the smallest value with at least p % of the values at or below it):
    /// sorted[ceil(p/100 * n) - 1], so it is always one of the values; NaN for no values.
    /// </summary>
    public static double Percentile(IEnumerable<double> values, double p)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(p, 0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(p, 100);
        var sorted = values.Where(double.IsFinite).Order().ToList();
        if (sorted.Count == 0) return double.NaN;
        int rank = (int)Math.Ceiling(p / 100 * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }

    /// <summary>Least-squares line y = slope x + intercept; slope 0 for fewer than two distinct x.</summary>
    public static (double Slope, double Intercept) LinearFit(IReadOnlyList<(double X, double Y)> points)
    {
        if (points.Count == 0) return (0, double.NaN);
        double mx = points.Average(p => p.X), my = points.Average(p => p.Y);
        double sxx = points.Sum(p => (p.X - mx) * (p.X - mx)), sxy = points.Sum(p => (p.X - mx) * (p.Y - my));
        double slope = sxx == 0 ? 0 : sxy / sxx;
        return (slope, my - slope * mx);
    }

    /// <summary>
    /// Judges one service's RSS samples (seconds, MiB): warm = mean over [warmupEnd, warmupEnd + window),
    /// end = mean over (last - window, last], the fit over every sample at or after warmupEnd.
    /// </summary>
    /// <param name="tolerance">Allowed growth as a fraction (0.10 = 10 %).</param>
    public static MemoryVerdict Flatness(IReadOnlyList<(double Seconds, double MiB)> samples, double warmupEnd, double window, double tolerance)
    {
        var after = samples.Where(s => s.Seconds >= warmupEnd).ToList();
        if (after.Count == 0) return new MemoryVerdict(double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, false);
        double last = after[^1].Seconds;
        double warm = after.Where(s => s.Seconds < warmupEnd + window).Select(s => s.MiB).DefaultIfEmpty(after[0].MiB).Average();
        double end = after.Where(s => s.Seconds > last - window).Average(s => s.MiB);
        var (slope, _) = LinearFit(after.Select(s => (s.Seconds, s.MiB)).ToList());
        double growth = (end - warm) / warm, fitGrowth = slope * (last - after[0].Seconds) / warm;
        return new MemoryVerdict(warm, end, 100 * growth, slope * 60, 100 * fitGrowth, growth <= tolerance && fitGrowth <= tolerance);
    }

    /// <summary>
    /// When the load became steady: the end of the first window that completed at least
    /// <paramref name="fraction"/> of the median window's requests (NaN for no windows). The stores'
    /// memory follows the request rate (sessions live for a TTL), so on a shared machine where the rate
    /// ramps up late a fixed warm-up would judge the ramp, not the steady state.
    /// </summary>
    public static double SteadyLoadSeconds(IReadOnlyList<LatencyWindow> windows, double windowSeconds, double fraction = 0.75)
    {
        if (windows.Count == 0) return double.NaN;
        double median = Percentile(windows.Select(w => (double)w.Requests), 50);
        var first = windows.First(w => w.Requests >= fraction * median);
        return first.StartSeconds + windowSeconds;
    }

    /// <summary>The requests grouped by the window their stream ended in, in time order (empty windows left out).</summary>
    public static List<LatencyWindow> Windows(IEnumerable<SoakRequestRecord> requests, double windowSeconds) =>
        requests.GroupBy(r => Math.Floor(r.EndSeconds / windowSeconds)).OrderBy(g => g.Key).Select(g =>
        {
            var ok = g.Where(r => r.Error is null).ToList();
            return new LatencyWindow(g.Key * windowSeconds, g.Count(), g.Sum(r => (long)r.Tokens), g.Count(r => r.Error is not null),
                Percentile(ok.Select(r => r.TtftMs), 50), Percentile(ok.Select(r => r.TtftMs), 99),
                Percentile(ok.Select(r => r.TpotMs), 50), Percentile(ok.Select(r => r.TpotMs), 99));
        }).ToList();
}
