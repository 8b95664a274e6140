using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LlmCtl.Soak;

/// <summary>One RSS sample of every watched process (seconds since the load began; MiB by service).</summary>
internal sealed record RssSample(double Seconds, IReadOnlyDictionary<string, double> MiB);

/// <summary>Everything a soak run measured, and the files and table made from it.</summary>
internal sealed class SoakReport
{
    public required IReadOnlyList<SoakRequestRecord> Requests { get; init; }
    public required IReadOnlyList<RssSample> Rss { get; init; }
    public required IReadOnlyList<string> Services { get; init; }
    public required double WarmupSeconds { get; init; }
    public required double WindowSeconds { get; init; }
    public required double Tolerance { get; init; }
    public required string LoadBefore { get; init; }
    public required string LoadAfter { get; init; }
    public required IReadOnlyDictionary<string, object> Settings { get; init; }
    public IReadOnlyList<string> Exited { get; init; } = [];
    public int ServiceErrorLines { get; init; }
    public int MaxDecodeQueue { get; init; }

    /// <summary>Seconds the gateway and cache manager keep a session: after the load is steady their stores
    /// fill for this long before what they hold is steady too.</summary>
    public double SessionTtlSeconds { get; init; }

    /// <summary>Where memory starts to be judged: the later of <see cref="WarmupSeconds"/> and the load becoming
    /// steady (<see cref="SoakStats.SteadyLoadSeconds"/>; the last window, usually partial, left out of the
    /// median) plus one session TTL.</summary>
    public double JudgedFromSeconds
    {
        get
        {
            var windows = SoakStats.Windows(Requests, WindowSeconds);
            double steady = SoakStats.SteadyLoadSeconds(windows.Take(Math.Max(1, windows.Count - 1)).ToList(), WindowSeconds);
            return double.IsNaN(steady) ? WarmupSeconds : Math.Max(WarmupSeconds, steady + SessionTtlSeconds);
        }
    }

    public Dictionary<string, int> ErrorsByCode => Requests.Where(r => r.Error is not null).GroupBy(r => r.Error!).ToDictionary(g => g.Key, g => g.Count());

    public Dictionary<string, MemoryVerdict> Memory => Services.ToDictionary(s => s, s => SoakStats.Flatness(
        Rss.Where(x => x.MiB.ContainsKey(s)).Select(x => (x.Seconds, x.MiB[s])).ToList(), JudgedFromSeconds, 60, Tolerance));

    public bool Ok => Requests.All(r => r.Error is null) && Memory.Values.All(m => m.Flat) && Exited.Count == 0 && Requests.Count > 0;

    public void WriteFiles(string folder)
    {
        Directory.CreateDirectory(folder);
        var inv = CultureInfo.InvariantCulture;
        var rss = new StringBuilder("seconds," + string.Join(',', Services.Select(s => s + "_mib")) + "\n");
        foreach (var x in Rss)
            rss.AppendLine(x.Seconds.ToString("F1", inv) + "," + string.Join(',', Services.Select(s => x.MiB.TryGetValue(s, out var v) ? v.ToString("F1", inv) : "")));
        File.WriteAllText(Path.Combine(folder, "rss.csv"), rss.ToString());

        var windows = SoakStats.Windows(Requests, WindowSeconds);
        var lat = new StringBuilder("start_seconds,requests,tokens,errors,ttft_p50_ms,ttft_p99_ms,tpot_p50_ms,tpot_p99_ms\n");
        foreach (var w in windows)
            lat.AppendLine(string.Join(',', new[] { w.StartSeconds, w.Requests, w.Tokens, w.Errors, w.TtftP50Ms, w.TtftP99Ms, w.TpotP50Ms, w.TpotP99Ms }.Select(v => Convert.ToDouble(v).ToString("0.###", inv))));
        File.WriteAllText(Path.Combine(folder, "latency.csv"), lat.ToString());

        File.WriteAllText(Path.Combine(folder, "summary.json"), JsonSerializer.Serialize(Summary(), new JsonSerializerOptions { WriteIndented = true }));

        double Min(double s) => s / 60;
        var warmMarker = new List<(double, string)> { (Min(JudgedFromSeconds), "end of warm-up") };
        var rssSeries = Services.Select(s => new PlotSeries(s, Rss.Where(x => x.MiB.ContainsKey(s)).Select(x => (Min(x.Seconds), x.MiB[s])).ToList())).ToList();
        File.WriteAllText(Path.Combine(folder, "rss.svg"), SvgLinePlot.Svg($"RSS per service, {Settings["clients"]} streaming clients",
            rssSeries, new PlotAxes("minutes", "VmRSS (MiB)", XMarkers: warmMarker, YFromZero: true)));
        var mid = windows.Select(w => Min(w.StartSeconds + WindowSeconds / 2)).ToList();
        PlotSeries Lat(string name, Func<LatencyWindow, double> f) => new(name, windows.Select((w, i) => (mid[i], f(w))).ToList());
        File.WriteAllText(Path.Combine(folder, "latency.svg"), SvgLinePlot.Svg($"TTFT and TPOT per {WindowSeconds:F0} s window",
            [Lat("TTFT p50", w => w.TtftP50Ms), Lat("TTFT p99", w => w.TtftP99Ms), Lat("TPOT p50", w => w.TpotP50Ms), Lat("TPOT p99", w => w.TpotP99Ms)],
            new PlotAxes("minutes", "milliseconds (log scale)", LogY: true, XMarkers: warmMarker)));
    }

    public object Summary()
    {
        var ok = Requests.Where(r => r.Error is null).ToList();
        return new
        {
            settings = Settings,
            load_before = LoadBefore,
            load_after = LoadAfter,
            requests = Requests.Count,
            checked_requests = Requests.Count(r => r.Checked),
            tokens = Requests.Sum(r => (long)r.Tokens),
            errors = Requests.Count(r => r.Error is not null),
            errors_by_code = ErrorsByCode,
            ttft_ms = new { p50 = SoakStats.Percentile(ok.Select(r => r.TtftMs), 50), p90 = SoakStats.Percentile(ok.Select(r => r.TtftMs), 90), p99 = SoakStats.Percentile(ok.Select(r => r.TtftMs), 99) },
            tpot_ms = new { p50 = SoakStats.Percentile(ok.Select(r => r.TpotMs), 50), p90 = SoakStats.Percentile(ok.Select(r => r.TpotMs), 90), p99 = SoakStats.Percentile(ok.Select(r => r.TpotMs), 99) },
            max_decode_queue = MaxDecodeQueue,
            memory_judged_from_seconds = JudgedFromSeconds,
            memory = Memory.ToDictionary(kv => kv.Key, kv => new
            {
                warm_mib = kv.Value.WarmMiB, end_mib = kv.Value.EndMiB, growth_percent = kv.Value.GrowthPercent,
                slope_mib_per_minute = kv.Value.SlopeMiBPerMinute, fit_growth_percent = kv.Value.FitGrowthPercent, flat = kv.Value.Flat,
            }),
            exited = Exited,
            service_error_lines = ServiceErrorLines,
            ok = Ok,
        };
    }

    public void Print(TextWriter o)
    {
        var ok = Requests.Where(r => r.Error is null).ToList();
        double span = Requests.Count == 0 ? 1 : Requests.Max(r => r.EndSeconds);
        o.WriteLine($"{Requests.Count} requests ({Requests.Count(r => r.Checked)} checked against the local run), {Requests.Sum(r => (long)r.Tokens)} tokens in {span / 60:F1} min ({Requests.Sum(r => (long)r.Tokens) / span:F0} tokens/s); load average {LoadBefore} before, {LoadAfter} after");
        var errors = ErrorsByCode;
        o.WriteLine($"errors: {errors.Values.Sum()}" + (errors.Count == 0 ? "" : " (" + string.Join(", ", errors.Select(kv => $"{kv.Key} {kv.Value}")) + ")"));
        o.WriteLine($"most sequences waiting for decode KV room at a progress line: {MaxDecodeQueue}; service error/critical log lines: {ServiceErrorLines}; processes exited: {(Exited.Count == 0 ? "none" : string.Join(", ", Exited))}");
        o.WriteLine($"| latency (ms) | p50 | p90 | p99 |");
        o.WriteLine("| --- | ---: | ---: | ---: |");
        foreach (var (name, f) in new (string, Func<SoakRequestRecord, double>)[] { ("TTFT", r => r.TtftMs), ("TPOT", r => r.TpotMs) })
            o.WriteLine($"| {name} | {SoakStats.Percentile(ok.Select(f), 50):F1} | {SoakStats.Percentile(ok.Select(f), 90):F1} | {SoakStats.Percentile(ok.Select(f), 99):F1} |");
        o.WriteLine($"memory: the warm-up ended at {JudgedFromSeconds / 60:F1} min (the later of {WarmupSeconds / 60:F1} min and the end of the first {WindowSeconds:F0} s window with at least 75 % of the median window's requests, plus the {SessionTtlSeconds:F0} s session TTL);");
        o.WriteLine($"  RSS mean over the first minute after it vs the last minute; flat = both that growth and a linear fit's growth over the span after the warm-up at most {Tolerance:P0}");
        o.WriteLine("| service | after warm-up MiB | end MiB | growth | fit slope MiB/min | fit growth | flat |");
        o.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
        foreach (var (s, m) in Memory)
            o.WriteLine($"| {s} | {m.WarmMiB:F1} | {m.EndMiB:F1} | {m.GrowthPercent:+0.0;-0.0} % | {m.SlopeMiBPerMinute:+0.00;-0.00} | {m.FitGrowthPercent:+0.0;-0.0} % | {(m.Flat ? "yes" : "NO")} |");
        o.WriteLine(Ok ? "PASS: 0 errors, 0 altered, memory flat after the warm-up" : "FAIL");
    }
}
