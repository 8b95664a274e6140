using LlmCtl.Soak;
using Xunit;

namespace Cluster.Engine.Tests.Bench;

/// <summary>`llmctl bench soak`'s numbers, against values computed by hand.</summary>
public sealed class SoakStatsTests
{
    [Theory]
    // Nearest rank over [15, 20, 35, 40, 50]: rank = ceil(p/100 * 5).
    [InlineData(0, 15)]    // rank 0 -> the first value
    [InlineData(20, 15)]   // rank 1
    [InlineData(30, 20)]   // ceil(1.5) = 2
    [InlineData(40, 20)]   // rank 2 exactly
    [InlineData(50, 35)]   // ceil(2.5) = 3
    [InlineData(99, 50)]   // ceil(4.95) = 5
    [InlineData(100, 50)]
    public void Percentile_is_the_nearest_rank(double p, double expected) =>
        Assert.Equal(expected, SoakStats.Percentile([50, 15, 40, 35, 20, double.NaN], p)); // unsorted; NaN (no first token) is left out

    [Fact]
    public void Percentile_of_nothing_is_nan() => Assert.True(double.IsNaN(SoakStats.Percentile([], 50)));

    [Fact]
    public void Linear_fit_recovers_a_line_and_the_least_squares_slope_of_noise()
    {
        Assert.Equal((2.0, 1.0), SoakStats.LinearFit([(0, 1), (1, 3), (2, 5)]));
        // (0,0), (1,2), (2,1): mean x 1, mean y 1; sxy = (-1)(-1) + 0 + (1)(0) = 1, sxx = 2 -> slope 0.5, intercept 0.5.
        Assert.Equal((0.5, 0.5), SoakStats.LinearFit([(0, 0), (1, 2), (2, 1)]));
    }

    [Fact]
    public void Memory_that_grows_only_during_the_warm_up_is_flat()
    {
        // 50 MiB rising to 100 over the 120 s warm-up, then 100 (+/- 1 alternating) to 600 s.
        var samples = Enumerable.Range(0, 61).Select(i => (Seconds: i * 10.0, MiB: i < 12 ? 50 + i * 50 / 12.0 : 100 + (i % 2 == 0 ? 1 : -1))).ToList();
        var v = SoakStats.Flatness(samples, warmupEnd: 120, window: 60, tolerance: 0.10);
        // Warm window [120, 180): samples at 120..170 = +1 -1 +1 -1 +1 -1 -> 100; end window (540, 600]: 550..600 = -1 +1 -1 +1 -1 +1 -> 100.
        Assert.Equal(100, v.WarmMiB, 9);
        Assert.Equal(100, v.EndMiB, 9);
        Assert.Equal(0, v.GrowthPercent, 9);
        Assert.True(Math.Abs(v.SlopeMiBPerMinute) < 0.01);
        Assert.True(v.Flat);
    }

    [Fact]
    public void Memory_that_keeps_growing_after_the_warm_up_is_not_flat_and_the_numbers_say_by_how_much()
    {
        // 100 + t/60 MiB (1 MiB a minute) from t = 120 to 600, every 10 s.
        var samples = Enumerable.Range(12, 49).Select(i => (Seconds: i * 10.0, MiB: 100 + i * 10 / 60.0)).ToList();
        var v = SoakStats.Flatness(samples, warmupEnd: 120, window: 60, tolerance: 0.05);
        // Warm: t = 120..170, mean t 145 -> 100 + 145/60 = 102.41667; end: t = 550..600, mean 575 -> 109.58333.
        Assert.Equal(102.416667, v.WarmMiB, 5);
        Assert.Equal(109.583333, v.EndMiB, 5);
        Assert.Equal(100 * (7.166667 / 102.416667), v.GrowthPercent, 4);   // 6.998 %
        Assert.Equal(1.0, v.SlopeMiBPerMinute, 9);
        Assert.Equal(100 * (8.0 / 102.416667), v.FitGrowthPercent, 4);      // 480 s at 1/60 MiB/s = 8 MiB: 7.811 %
        Assert.False(v.Flat);
        Assert.True(SoakStats.Flatness(samples, 120, 60, tolerance: 0.08).Flat); // 6.998 % and 7.811 % are within 8 %
    }

    [Fact]
    public void A_service_with_no_sample_after_the_warm_up_is_not_flat() =>
        Assert.False(SoakStats.Flatness([(10, 100), (20, 100)], warmupEnd: 120, window: 60, tolerance: 0.1).Flat);

    [Fact]
    public void Windows_group_by_end_time_and_leave_errors_out_of_the_latencies()
    {
        SoakRequestRecord R(double end, double ttft, double tpot, int tokens, string? error = null) => new(0, 0, end, ttft, tpot, tokens, error, false);
        var windows = SoakStats.Windows([R(1, 10, 1, 5), R(29.9, 30, 3, 7), R(12, 999, 999, 0, "Unavailable"), R(31, 50, 2, 4), R(95, 20, 4, 1)], 30);
        Assert.Equal([0.0, 30.0, 90.0], windows.Select(w => w.StartSeconds));
        var first = windows[0];
        Assert.Equal((3, 12L, 1), (first.Requests, first.Tokens, first.Errors));
        Assert.Equal((10.0, 30.0, 1.0, 3.0), (first.TtftP50Ms, first.TtftP99Ms, first.TpotP50Ms, first.TpotP99Ms));
        Assert.Equal((1, 4L, 0, 50.0), (windows[1].Requests, windows[1].Tokens, windows[1].Errors, windows[1].TtftP99Ms));
    }

    [Fact]
    public void The_load_is_steady_from_the_end_of_the_first_window_with_three_quarters_of_the_median_rate()
    {
        LatencyWindow W(double start, int requests) => new(start, requests, 0, 0, 0, 0, 0, 0);
        // Counts 10, 40, 70, 100, 110, 90, 105: median 90, 75 % of it 67.5 -> the window at 60 s (70) is the
        // first; steady from its end, 90 s.
        Assert.Equal(90, SoakStats.SteadyLoadSeconds([W(0, 10), W(30, 40), W(60, 70), W(90, 100), W(120, 110), W(150, 90), W(180, 105)], 30));
        Assert.Equal(30, SoakStats.SteadyLoadSeconds([W(0, 100), W(30, 100)], 30)); // steady from the start
        Assert.True(double.IsNaN(SoakStats.SteadyLoadSeconds([], 30)));
    }
}
