using System.CommandLine;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Cluster.Serving.Hosting;
using LlmCtl.Fuzz;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench fuzz`: sends the gateway's gRPC and HTTP front doors many seeded malformed requests
/// (<see cref="FrontDoorFuzzer"/>) and reports the answers by class, every distinct 5xx / INTERNAL /
/// UNKNOWN / hang with an example input, whether the cluster kept answering and stayed up, and each
/// service's RSS: warm baseline, peak, and after the run. With no --endpoint it starts its own
/// cluster (as `llmctl up` does) and watches its processes.
/// <para>
/// "Memory returns to baseline" is measured in the same quiet state both times, with nothing done to
/// the services from outside: the requests that happened to be valid started sessions, which the
/// gateway and cache manager keep for --session-ttl (retention, not a leak), so the baseline and the
/// final sample are each taken after waiting past that TTL, one real completion (which runs the stores'
/// sweeps), and then long enough idle for every service's own idle trim to run (IdleMemoryTrim: an
/// aggressive GC and malloc_trim once a service goes quiet after work, which is what gives back the GC
/// regions and malloc arenas a burst left committed).
/// </para>
/// </summary>
internal static class BenchFuzzCommand
{
    public static Command Create()
    {
        var requests = new Option<int>("--requests") { Description = "malformed requests to send", DefaultValueFactory = _ => 100_000 };
        var seed = new Option<int>("--seed") { Description = "generator seed: request i's input depends only on (seed, i)", DefaultValueFactory = _ => 1 };
        var concurrency = new Option<int>("--concurrency") { Description = "requests in flight at once", DefaultValueFactory = _ => 8 };
        var checkEvery = new Option<int>("--check-every") { Description = "a real completion, a gRPC health check and an RSS sample after every this many requests", DefaultValueFactory = _ => 1000 };
        var warmup = new Option<int>("--warmup") { Description = "fuzz requests (another seed, not counted) before the memory baseline, so JIT and pools are warm", DefaultValueFactory = _ => 1000 };
        var settle = new Option<double?>("--settle-seconds") { Description = "idle time before the baseline and the final RSS sample (default: own cluster --session-ttl + 10, so the sessions have expired; with --endpoint 15)" };
        var sessionTtl = new Option<int>("--session-ttl") { Description = "own cluster: seconds the gateway and cache manager keep a session; the memory samples wait past it", DefaultValueFactory = _ => 30 };
        var tolerance = new Option<double>("--rss-tolerance") { Description = "memory is back when each service's RSS in the final quiet state is at most baseline x (1 + this) or baseline + 16 MiB (what JIT'd code may add: bench/fuzz/README.md)", DefaultValueFactory = _ => 0.10 };
        var timeout = new Option<double>("--timeout-seconds") { Description = "a request not answered within this is a hang (a finding)", DefaultValueFactory = _ => 15 };
        var endpoint = new Option<string?>("--endpoint") { Description = "fuzz a running gateway's gRPC port (e.g. http://127.0.0.1:50051) instead of starting a cluster; needs --http" };
        var http = new Option<string?>("--http") { Description = "the running gateway's HTTP port (e.g. http://127.0.0.1:8000)" };
        var pids = new Option<string?>("--pids") { Description = "with --endpoint: service processes to watch, comma-separated name=pid" };
        var portOffset = new Option<int>("--port-offset") { Description = "own cluster: added to every default port (docs/SERVICES.md)", DefaultValueFactory = _ => 4400 };
        var model = new Option<string?>("--model") { Description = "own cluster: model (default: the generated stories260K-size one)" };
        var json = new Option<bool>("--json") { Description = "print the report as JSON" };
        var smapsDir = new Option<string?>("--smaps-dir") { Description = "save each service's /proc/PID/smaps at the baseline and the final sample into this folder (NAME.baseline.smaps, NAME.after.smaps; split them with bench/fuzz/smaps_split.py)" };
        var from = new Option<int>("--from") { Description = "index of the first request (to replay a finding: --from I --requests 1)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("fuzz", "send the gateway's gRPC and HTTP front doors seeded malformed requests; report crashes, 5xx/INTERNAL, liveness and memory")
            { requests, seed, concurrency, checkEvery, warmup, settle, sessionTtl, tolerance, timeout, endpoint, http, pids, portOffset, model, json, from, smapsDir };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var serviceErrors = new ConcurrentDictionary<string, int>();
            var pending = new ConcurrentDictionary<ServiceRole, List<string>>();
            int errorLines = 0;
            LocalCluster? cluster = null;
            try
            {
                FuzzTarget target;
                if (r.GetValue(endpoint) is { } grpcUrl)
                {
                    var httpUrl = r.GetValue(http) ?? throw new ArgumentException("--endpoint needs --http (the gateway's HTTP port)");
                    Uri g = new(grpcUrl), h = new(httpUrl);
                    var watched = (r.GetValue(pids) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)
                        .Select(p => p.Split('=')).Select(p => (p[0], Process.GetProcessById(int.Parse(p[^1])))).ToList();
                    target = new FuzzTarget(g.Host, g.Port, h.Port, watched);
                }
                else
                {
                    var modelPath = ModelSource.ResolvePath(r.GetValue(model));
                    var ports = new LocalCluster.PortPlan("127.0.0.1", r.GetValue(portOffset), null, null, 1, 1);
                    ports.EnsureFree();
                    // Service output is kept, not printed: error and critical lines are part of the report.
                    cluster = new LocalCluster("127.0.0.1")
                    {
                        Output = (role, line, fromStderr) =>
                        {
                            // An error's first three lines (logger category, message, exception) name it; counted by kind.
                            if (line.StartsWith("fail:", StringComparison.Ordinal) || line.StartsWith("crit:", StringComparison.Ordinal))
                            {
                                Interlocked.Increment(ref errorLines);
                                pending[role] = new List<string> { line };
                            }
                            else if (pending.TryGetValue(role, out var lines))
                            {
                                lines.Add(System.Text.RegularExpressions.Regex.Replace(line.Trim(), "(Connection|Request) id \"[^\"]*\"", "$1 id ..."));
                                if (lines.Count == 3 && pending.TryRemove(role, out _))
                                    serviceErrors.AddOrUpdate($"[{role.Name()}] {string.Join(" | ", lines)}", 1, (_, n) => n + 1);
                            }
                            else if (line.Contains("Unhandled exception", StringComparison.Ordinal))
                            {
                                Interlocked.Increment(ref errorLines);
                                serviceErrors.AddOrUpdate($"[{role.Name()}] {line.Trim()}", 1, (_, n) => n + 1);
                            }
                        },
                    };
                    var ttl = r.GetValue(sessionTtl).ToString(System.Globalization.CultureInfo.InvariantCulture);
                    string[] Common(ServiceRole role) => role switch
                    {
                        ServiceRole.CacheManager => ["--host", "127.0.0.1", "--log-level", "warning", "--session-ttl", ttl],
                        ServiceRole.Gateway => ["--host", "127.0.0.1", "--log-level", "warning", "--model", modelPath, "--session-ttl", ttl],
                        _ => ["--host", "127.0.0.1", "--log-level", "warning", "--model", modelPath],
                    };
                    var cm = cluster.Start(ServiceRole.CacheManager, Common(ServiceRole.CacheManager), ports.For(ServiceRole.CacheManager, 0));
                    var pf = cluster.Start(ServiceRole.Prefill, [.. Common(ServiceRole.Prefill), "--cache-manager", cm.Grpc], ports.For(ServiceRole.Prefill, 0));
                    var dc = cluster.Start(ServiceRole.Decode, [.. Common(ServiceRole.Decode), "--cache-manager", cm.Grpc], ports.For(ServiceRole.Decode, 0));
                    var gw = cluster.Start(ServiceRole.Gateway, [.. Common(ServiceRole.Gateway), "--cache-manager", cm.Grpc, "--prefill", pf.Grpc, "--decode", dc.Grpc, "--policy", "dense"], ports.For(ServiceRole.Gateway, 0));
                    Console.SetOut(Console.Error); // WaitHealthy's lines are progress, not the report
                    try { cluster.WaitHealthy(TimeSpan.FromMinutes(3), CancellationToken.None); }
                    finally { Console.SetOut(new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true }); }
                    target = new FuzzTarget("127.0.0.1", new Uri(gw.Grpc).Port, new Uri(gw.Http).Port, cluster.Services.Select(s => (s.Role.Name(), s.Process)).ToList());
                    WaitUntilGenerating(target);
                }

                var options = new FuzzOptions(r.GetValue(requests), r.GetValue(seed), r.GetValue(concurrency), r.GetValue(checkEvery), r.GetValue(timeout));
                if (options.Requests < 1) throw new ArgumentException("--requests must be at least 1");
                using var fuzzer = new FrontDoorFuzzer(target, options);
                string load0 = LoadAverage();
                // Past the TTL the stores have swept the sessions valid fuzz requests started (own cluster; with
                // --endpoint the TTL is the running gateway's, unknown here: --settle-seconds or 15 s).
                var quiet = TimeSpan.FromSeconds(r.GetValue(settle) ?? (cluster is null ? 15 : r.GetValue(sessionTtl) + 10));
                if (r.GetValue(warmup) is int w and > 0)
                {
                    Console.Error.WriteLine($"warm-up: {w} fuzz requests (seed {options.Seed + 1}, not counted)");
                    using var warm = new FrontDoorFuzzer(target, options with { Requests = w, Seed = options.Seed + 1, CheckEvery = 0 });
                    warm.RunAsync().GetAwaiter().GetResult();
                }
                var metricsUrls = cluster?.Services.ToDictionary(x => x.Role.Name(), x => x.Http);
                var (baseline, mem0) = Quiesced(fuzzer, target, 0, quiet, metricsUrls, r.GetValue(smapsDir), "baseline");
                Console.Error.WriteLine($"baseline RSS (after {quiet.TotalSeconds:F0} s idle, a completion, {TrimWait.TotalSeconds:F0} s idle): {Rss(baseline)}; fuzzing {options.Requests} requests, seed {options.Seed}, {options.Concurrency} at once");
                var progress = new ConsoleProgress("fuzz requests", options.Requests);
                var report = fuzzer.RunAsync(d => { lock (progress) progress.Report(d); }, r.GetValue(from)).GetAwaiter().GetResult();
                string load1 = LoadAverage();
                int sessionsAtEnd = fuzzer.SessionCountAsync().GetAwaiter().GetResult();
                Console.Error.WriteLine($"done in {report.WallSeconds:F1} s; the gateway holds {sessionsAtEnd} sessions; waiting {quiet.TotalSeconds:F0} s, a completion, {TrimWait.TotalSeconds:F0} s");
                var (after, mem1) = Quiesced(fuzzer, target, options.Requests, quiet, metricsUrls, r.GetValue(smapsDir), "after");
                int sessionsAfter = fuzzer.SessionCountAsync().GetAwaiter().GetResult();
                report.Checks.Add(after);

                var peak = report.Checks.SelectMany(c => c.RssKiB).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.Max(kv => kv.Value));
                var memory = baseline.RssKiB.Keys.Select(name =>
                {
                    long b = baseline.RssKiB[name], a = after.RssKiB.GetValueOrDefault(name, -1);
                    bool back = a >= 0 && (a <= b * (1 + r.GetValue(tolerance)) || a <= b + 16 * 1024);
                    return (Name: name, Baseline: b, Peak: peak.GetValueOrDefault(name), After: a, Back: back);
                }).ToList();
                var exited = after.Exited.Concat(report.Checks.SelectMany(c => c.Exited)).Distinct().ToList();
                // Answers due to a known upstream bug (KnownUpstream) are reported below but are not findings.
                var findings = report.Findings.ToList();
                bool ok = findings.Count == 0 && report.FailedChecks == 0 && exited.Count == 0 && memory.All(m => m.Back);

                if (r.GetValue(json))
                    Console.WriteLine(JsonSerializer.Serialize(new
                    {
                        requests = options.Requests, seed = options.Seed, concurrency = options.Concurrency, wall_seconds = report.WallSeconds,
                        load_before = load0, load_after = load1,
                        by_category = report.ByCategory, by_kind = report.ByKind, by_answer = report.ByAnswer, by_kind_answer = report.ByKindAnswer,
                        checks = report.Checks.Count, failed_checks = report.FailedChecks, exited, service_error_lines = errorLines,
                        sessions_at_end = sessionsAtEnd, sessions_after_quiet = sessionsAfter, quiet_seconds = quiet.TotalSeconds, trim_wait_seconds = TrimWait.TotalSeconds,
                        service_memory = mem0.Keys.ToDictionary(k => k, k => new { baseline = mem0[k], after = mem1.GetValueOrDefault(k) }),
                        known_upstream = report.KnownUpstreamAnswers,
                        memory_kib = memory.Select(m => new { service = m.Name, baseline = m.Baseline, peak = m.Peak, after = m.After, back = m.Back }),
                        examples = report.Examples.Values.OrderBy(e => e.Index), service_errors = serviceErrors, ok,
                    }, new JsonSerializerOptions { WriteIndented = true }));
                else
                {
                    Print(report, load0, load1, memory, exited, errorLines, serviceErrors, ok);
                    Console.WriteLine($"sessions held by the gateway: {sessionsAtEnd} when the run ended, {sessionsAfter} after {quiet.TotalSeconds:F0} s idle (baseline and final RSS are both taken in that quiet state)");
                    PrintMemorySplit(mem0, mem1);
                }
                return ok ? 0 : 1;
            }
            finally { cluster?.Dispose(); }
        }));
        return cmd;
    }

    /// <summary>How long the final quiet stretch lasts: long enough for IdleMemoryTrim's second trim (a
    /// minute into a quiet stretch, after the sessions expired), even if the completion started the stretch
    /// anew: one period more than that, and 5 s.</summary>
    private static readonly TimeSpan TrimWait = (Cluster.Serving.Hosting.IdleMemoryTrim.SettledPeriods + 1) * Cluster.Serving.Hosting.IdleMemoryTrim.DefaultPeriod + TimeSpan.FromSeconds(5);

    /// <summary>
    /// The memory sample both ends of the comparison use: after <paramref name="quiet"/> idle, a check (a
    /// real completion, whose store calls run the TTL sweeps, a health check), then <see cref="TrimWait"/>
    /// idle, in which every service trims itself; then each one's RSS and, where <paramref name="metrics"/>
    /// names its HTTP port, its GC figures.
    /// </summary>
    private static (FuzzCheck Check, Dictionary<string, ServiceMemory> Memory) Quiesced(FrontDoorFuzzer fuzzer, FuzzTarget target, int after, TimeSpan quiet, IReadOnlyDictionary<string, string>? metrics, string? smapsDir, string label)
    {
        Thread.Sleep(quiet);
        var check = fuzzer.CheckAsync(after).GetAwaiter().GetResult();
        Thread.Sleep(TrimWait);
        var memory = new Dictionary<string, ServiceMemory>();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        foreach (var (name, p) in target.Processes)
        {
            string? text = null;
            if (metrics?.GetValueOrDefault(name) is { } url)
            {
                try { text = http.GetStringAsync($"{url}/metrics").GetAwaiter().GetResult(); }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
            }
            if (!p.HasExited && ServiceMemory.Read(p.Id, text) is { } m) memory[name] = m;
            // Reading smaps only reads: it changes nothing in the service's memory.
            if (smapsDir is not null && !p.HasExited)
            {
                try
                {
                    Directory.CreateDirectory(smapsDir);
                    File.WriteAllText(Path.Combine(smapsDir, $"{name}.{label}.smaps"), File.ReadAllText($"/proc/{p.Id}/smaps"));
                }
                catch (IOException) { }
            }
        }
        return (check with { RssKiB = memory.ToDictionary(kv => kv.Key, kv => kv.Value.RssKiB) }, memory);
    }

    private static void PrintMemorySplit(Dictionary<string, ServiceMemory> before, Dictionary<string, ServiceMemory> after)
    {
        static string Mib(long? bytes) => bytes is long b ? $"{b / 1048576.0:F1}" : "-";
        Console.WriteLine("in the quiet state, baseline -> after (MiB): RSS = anonymous + file-backed + shared (the JIT's double-mapped code); GC heap / GC committed; idle trims so far");
        foreach (var (name, b) in before)
        {
            var a = after.GetValueOrDefault(name);
            Console.WriteLine($"  {name,-14} anon {b.AnonKiB / 1024.0:F1} -> {(a?.AnonKiB ?? 0) / 1024.0:F1}, file {b.FileKiB / 1024.0:F1} -> {(a?.FileKiB ?? 0) / 1024.0:F1}, shared {b.ShmemKiB / 1024.0:F1} -> {(a?.ShmemKiB ?? 0) / 1024.0:F1}; " +
                $"heap {Mib(b.HeapBytes)} -> {Mib(a?.HeapBytes)}, committed {Mib(b.CommittedBytes)} -> {Mib(a?.CommittedBytes)}; trims {b.IdleTrims?.ToString() ?? "-"} -> {a?.IdleTrims?.ToString() ?? "-"}");
        }
    }

    /// <summary>The gateway's workers are probed every 2 s; the first real completion waits for them.</summary>
    private static void WaitUntilGenerating(FuzzTarget target)
    {
        using var probe = new FrontDoorFuzzer(target, new FuzzOptions(0, 0));
        for (var deadline = DateTime.UtcNow.AddSeconds(60); ; Thread.Sleep(500))
        {
            var c = probe.CheckAsync(0).GetAwaiter().GetResult();
            if (c.HttpOk && c.GrpcOk) return;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the cluster does not answer a completion: {c.Error}");
        }
    }

    private static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
    }

    private static string Truncate(string s, int n) => s.Length <= n ? s : s[..n] + "...";

    private static string Rss(FuzzCheck c) => string.Join(", ", c.RssKiB.Select(kv => $"{kv.Key} {kv.Value / 1024.0:F1} MiB"));

    private static void Print(FuzzReport report, string load0, string load1, List<(string Name, long Baseline, long Peak, long After, bool Back)> memory,
        List<string> exited, int errorLines, ConcurrentDictionary<string, int> serviceErrors, bool ok)
    {
        var o = report.Options;
        Console.WriteLine($"{o.Requests} malformed requests, seed {o.Seed}, concurrency {o.Concurrency}: {report.WallSeconds:F1} s ({o.Requests / report.WallSeconds:F0} requests/s); load average {load0} before, {load1} after");
        Console.WriteLine("by category: " + string.Join(", ", report.ByCategory.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value}")));
        Console.WriteLine("answers (a raw HTTP/2 connection can count several):");
        foreach (var (k, v) in report.ByAnswer.OrderBy(kv => kv.Key)) Console.WriteLine($"  {k,-40} {v,8}");
        Console.WriteLine("answers by kind of input (a raw HTTP/2 connection is named by its first action):");
        foreach (var (k, v) in report.ByKindAnswer.OrderBy(kv => kv.Key)) Console.WriteLine($"  {k,-50} {v,8}");
        Console.WriteLine($"liveness: {report.Checks.Count} checks (completion over HTTP + gRPC health), {report.FailedChecks} failed; processes exited: {(exited.Count == 0 ? "none" : string.Join(", ", exited))}; service error/critical log lines: {errorLines}");
        foreach (var c in report.Checks.Where(c => c.Error is not null).Take(5)) Console.WriteLine($"  check after {c.AfterRequests}: {c.Error}");
        Console.WriteLine("memory (VmRSS, MiB): service, baseline, peak during the run, after; baseline and after each in the same quiet state (idle past the session TTL, a completion, then idle while the services trim themselves)");
        foreach (var m in memory) Console.WriteLine($"  {m.Name,-14} {m.Baseline / 1024.0,8:F1} {m.Peak / 1024.0,8:F1} {m.After / 1024.0,8:F1}  {(m.Back ? "back" : "NOT back")}");
        // The trend tells a leak (growing to the end) from a heap that grew once and is not given back.
        var checks = report.Checks.Where(c => c.RssKiB.Count > 0).ToList();
        var picks = Enumerable.Range(0, Math.Min(11, checks.Count)).Select(i => checks[(int)Math.Round(i * (checks.Count - 1) / Math.Max(1.0, Math.Min(11, checks.Count) - 1))]).Distinct().ToList();
        Console.WriteLine("RSS (MiB) at the checks, after N requests: " + string.Join(' ', picks.Select(c => c.AfterRequests)));
        foreach (var m in memory) Console.WriteLine($"  {m.Name,-14} " + string.Join(' ', picks.Select(c => c.RssKiB.TryGetValue(m.Name, out var v) ? $"{v / 1024.0:F1}" : "-")));
        var examples = report.Examples.Values.OrderBy(e => e.Finding ? 0 : 1).ThenBy(e => e.Index).ToList();
        Console.WriteLine($"findings (5xx, unexpected INTERNAL, hangs): {report.Findings.Count()} distinct; known upstream answers (reported, not findings): {report.KnownUpstreamAnswers.Sum(e => e.Count)}");
        foreach (var e in examples)
            Console.WriteLine($"  {(e.Finding ? "FINDING" : e.Known ? "KNOWN  " : "note   ")} {e.Category} {e.Answer} x{e.Count} \"{e.Message}\" first at request {e.Index} ({e.Kind}): {e.Input}");
        if (errorLines > 0)
        {
            Console.WriteLine("service error log lines, by kind:");
            foreach (var (line, n) in serviceErrors.OrderByDescending(kv => kv.Value)) Console.WriteLine($"  x{n} {Truncate(line, 300)}");
        }
        Console.WriteLine(ok ? "PASS: no crash, no finding, still answering, memory back" : "FAIL");
    }
}
