using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Cluster.Engine.Loaders;
using Cluster.Serving.Hosting;
using Cluster.Serving.Routing;
using Grpc.Core;
using LlmCluster.V1;
using LlmCtl.Soak;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench soak` (issue 21): a cluster of separate processes (as `llmctl up` starts it, with a
/// redis-server for sessions and a decode KV budget small enough that admission queues) under N
/// streaming clients for a fixed time. Records every request's status, TTFT and TPOT, and every
/// process's RSS every few seconds; writes the time series (CSV, JSON) and two SVG plots; fails when
/// any request failed or was altered, or when a service's memory grew after the warm-up.
/// </summary>
internal static class BenchSoakCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model (default: ../shared's stories260K via LLMCLUSTER_SHARED, else a generated one)" };
        var minutes = new Option<double>("--minutes") { Description = "how long the clients run", DefaultValueFactory = _ => 10 };
        var warmup = new Option<double>("--warmup-minutes") { Description = "memory is judged from this point on (JIT, pools and the session TTL's steady state reached)", DefaultValueFactory = _ => 2 };
        var clients = new Option<int>("--clients") { Description = "concurrent streaming clients", DefaultValueFactory = _ => 64 };
        var kvMemory = new Option<int>("--kv-memory") { Description = "decode worker's KV budget in MiB (small, so that admission queues)", DefaultValueFactory = _ => 1 };
        var cacheMemory = new Option<int>("--cache-memory") { Description = "cache manager's KV budget in MiB (past it, sessions idle past the TTL, then least recently used, are evicted)", DefaultValueFactory = _ => 256 };
        var sessionTtl = new Option<int>("--session-ttl") { Description = "seconds the gateway and cache manager keep a finished session (shorter than the warm-up, so their stores reach a steady state)", DefaultValueFactory = _ => 60 };
        var seed = new Option<int>("--seed") { Description = "seed of the clients' requests", DefaultValueFactory = _ => 1 };
        var checkEvery = new Option<int>("--check-every") { Description = "every Nth request of each client is compared token for token with a precomputed local run (0: none)", DefaultValueFactory = _ => 4 };
        var sampleSeconds = new Option<double>("--sample-seconds") { Description = "seconds between RSS samples", DefaultValueFactory = _ => 5 };
        var windowSeconds = new Option<double>("--window-seconds") { Description = "latency window and progress interval", DefaultValueFactory = _ => 30 };
        var tolerance = new Option<double>("--rss-tolerance") { Description = "memory is flat when its growth after the warm-up is at most this fraction", DefaultValueFactory = _ => 0.10 };
        var offset = new Option<int>("--port-offset") { Description = "port offset of the cluster", DefaultValueFactory = _ => 4800 };
        var outDir = new Option<string?>("--out") { Description = "folder for rss.csv, latency.csv, summary.json, rss.svg, latency.svg (default bench/soak/<UTC date>)" };
        var cmd = new Command("soak", "N streaming clients against a cluster for minutes: errors, altered tokens, TTFT/TPOT over time, every service's RSS; fails unless 0 errors and flat memory")
            { model, minutes, warmup, clients, kvMemory, cacheMemory, sessionTtl, seed, checkEvery, sampleSeconds, windowSeconds, tolerance, offset, outDir };
        cmd.SetAction(r => CommandErrors.Run(() => Run(new Settings(r.GetValue(model), r.GetValue(minutes), r.GetValue(warmup), r.GetValue(clients), r.GetValue(kvMemory), r.GetValue(cacheMemory),
            r.GetValue(sessionTtl), r.GetValue(seed), r.GetValue(checkEvery), r.GetValue(sampleSeconds), r.GetValue(windowSeconds), r.GetValue(tolerance), r.GetValue(offset),
            r.GetValue(outDir) ?? Path.Combine("bench", "soak", DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)))).GetAwaiter().GetResult()));
        return cmd;
    }

    private sealed record Settings(string? Model, double Minutes, double WarmupMinutes, int Clients, int KvMemoryMb, int CacheMemoryMb, int SessionTtl, int Seed, int CheckEvery,
        double SampleSeconds, double WindowSeconds, double Tolerance, int PortOffset, string Out);

    private static async Task<int> Run(Settings s)
    {
        if (s.Minutes <= 0 || s.Clients < 1 || s.KvMemoryMb < 1 || s.CacheMemoryMb < 1 || s.SampleSeconds <= 0 || s.WindowSeconds <= 0) throw new ArgumentException("--minutes, --clients, --kv-memory, --sample-seconds and --window-seconds must be positive");
        if (s.WarmupMinutes + 1 > s.Minutes) throw new ArgumentException("--minutes must be at least --warmup-minutes + 1 (memory is judged over the time after the warm-up)");
        var shared = Environment.GetEnvironmentVariable("LLMCLUSTER_SHARED");
        var modelPath = ModelSource.ResolvePath(s.Model ?? (shared is null ? null : Path.Combine(shared, "models", "stories260K")));

        // The checked requests' tokens are computed before the cluster starts, so the local model does
        // not compete with the cluster for the CPU during the run.
        List<SoakRequest> pool;
        using (var local = ModelLoader.Load(modelPath))
        {
            var tokenizer = ModelLoader.LoadTokenizer(modelPath, local.Config);
            Console.Error.WriteLine("computing the checked requests' tokens locally ...");
            pool = SoakClients.CheckedPool(local, tokenizer, 32, s.Seed);
        }

        var ports = new LocalCluster.PortPlan("127.0.0.1", s.PortOffset, null, null, 1, 1);
        ports.EnsureFree();
        int errorLines = 0;
        var firstErrors = new ConcurrentQueue<string>();
        using var cluster = new LocalCluster("127.0.0.1")
        {
            Output = (role, line, _) =>
            {
                if (!line.StartsWith("fail:", StringComparison.Ordinal) && !line.StartsWith("crit:", StringComparison.Ordinal)) return;
                if (Interlocked.Increment(ref errorLines) <= 10) firstErrors.Enqueue($"[{role.Name()}] {line}");
            },
        };
        var ttl = s.SessionTtl.ToString(CultureInfo.InvariantCulture);
        string[] Common(ServiceRole role) => role == ServiceRole.CacheManager
            ? ["--host", "127.0.0.1", "--log-level", "warning", "--session-ttl", ttl, "--memory-mb", s.CacheMemoryMb.ToString(CultureInfo.InvariantCulture)]
            : ["--host", "127.0.0.1", "--log-level", "warning", "--model", modelPath];
        var redis = cluster.StartRedis();
        var cm = cluster.Start(ServiceRole.CacheManager, Common(ServiceRole.CacheManager), ports.For(ServiceRole.CacheManager, 0));
        var pf = cluster.Start(ServiceRole.Prefill, [.. Common(ServiceRole.Prefill), "--cache-manager", cm.Grpc, "--threads", "1"], ports.For(ServiceRole.Prefill, 0));
        var dc = cluster.Start(ServiceRole.Decode, [.. Common(ServiceRole.Decode), "--cache-manager", cm.Grpc, "--threads", "1", "--kv-memory", s.KvMemoryMb.ToString(CultureInfo.InvariantCulture)], ports.For(ServiceRole.Decode, 0));
        var gw = cluster.Start(ServiceRole.Gateway, [.. Common(ServiceRole.Gateway), "--cache-manager", cm.Grpc, "--prefill", pf.Grpc, "--decode", dc.Grpc, "--policy", "dense", "--redis", redis, "--session-ttl", ttl], ports.For(ServiceRole.Gateway, 0));
        cluster.WaitHealthy(TimeSpan.FromMinutes(3), CancellationToken.None);

        var watched = cluster.Services.Select(x => (Name: x.Role.Name(), x.Process)).Append((Name: "redis", Process: cluster.RedisProcess!)).ToList();
        using var channel = GrpcChannels.Create(gw.Grpc);
        var gateway = new Gateway.GatewayClient(channel);
        await WaitUntilGenerating(gateway, pool[0]);

        var load0 = LoadAverage();
        Console.Error.WriteLine($"cluster up (decode KV budget {s.KvMemoryMb} MiB, cache manager {s.CacheMemoryMb} MiB, session TTL {s.SessionTtl} s); {s.Clients} clients for {s.Minutes} min, load average {load0}");
        var clock = Stopwatch.StartNew();
        var load = new SoakClients(gateway, pool, s.Seed, s.CheckEvery);
        using var abort = new CancellationTokenSource();
        var running = load.RunAsync(s.Clients, clock, TimeSpan.FromMinutes(s.Minutes), abort.Token);

        var samples = new List<RssSample>();
        var exited = new List<string>();
        int maxQueue = 0, reported = 0;
        double nextSample = 0, nextProgress = s.WindowSeconds;
        using var metrics = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        while (!running.IsCompleted)
        {
            double now = clock.Elapsed.TotalSeconds;
            if (now >= nextSample)
            {
                samples.Add(Sample(watched, now, exited));
                nextSample += s.SampleSeconds;
            }
            if (now >= nextProgress)
            {
                int queue = await DecodeQueue(metrics, dc.Http);
                maxQueue = Math.Max(maxQueue, queue);
                var done = load.Records.ToList();
                Console.Error.WriteLine(Progress(done, reported, now, s.WindowSeconds, samples[^1], queue));
                reported = done.Count;
                nextProgress += s.WindowSeconds;
            }
            // A process that died makes the run a failure at once; the clients' streams end with errors.
            if (exited.Count > 0 && !abort.IsCancellationRequested) abort.CancelAfter(TimeSpan.FromSeconds(10));
            await Task.WhenAny(running, Task.Delay(250));
        }
        await running;
        samples.Add(Sample(watched, clock.Elapsed.TotalSeconds, exited));
        var report = new SoakReport
        {
            Requests = [.. load.Records.OrderBy(x => x.EndSeconds)],
            Rss = samples,
            Services = watched.Select(w => w.Name).ToList(),
            WarmupSeconds = s.WarmupMinutes * 60,
            SessionTtlSeconds = s.SessionTtl,
            WindowSeconds = s.WindowSeconds,
            Tolerance = s.Tolerance,
            LoadBefore = load0,
            LoadAfter = LoadAverage(),
            Exited = exited,
            ServiceErrorLines = errorLines,
            MaxDecodeQueue = maxQueue,
            Settings = new Dictionary<string, object>
            {
                ["model"] = modelPath, ["minutes"] = s.Minutes, ["warmup_minutes"] = s.WarmupMinutes, ["clients"] = s.Clients,
                ["kv_memory_mib"] = s.KvMemoryMb, ["cache_memory_mib"] = s.CacheMemoryMb, ["session_ttl_s"] = s.SessionTtl, ["seed"] = s.Seed, ["check_every"] = s.CheckEvery,
                ["rss_tolerance"] = s.Tolerance, ["session_store"] = "redis",
            },
        };
        report.WriteFiles(s.Out);
        report.Print(Console.Out);
        foreach (var e in firstErrors) Console.WriteLine($"  {e}");
        Console.WriteLine($"files: {Path.GetFullPath(s.Out)}/{{rss.csv,latency.csv,summary.json,rss.svg,latency.svg}}");
        return report.Ok ? 0 : 1;
    }

    private static RssSample Sample(List<(string Name, Process Process)> watched, double now, List<string> exited)
    {
        var mib = new Dictionary<string, double>();
        foreach (var (name, p) in watched)
        {
            if (p.HasExited)
            {
                if (!exited.Any(e => e.StartsWith(name + " ", StringComparison.Ordinal))) exited.Add($"{name} (pid {p.Id}, exit {p.ExitCode}, at {now:F0} s)");
            }
            else if (ProcessMemory.RssKiB(p.Id) is long kib) mib[name] = kib / 1024.0;
        }
        return new RssSample(now, mib);
    }

    private static string Progress(List<SoakRequestRecord> done, int reported, double now, double window, RssSample rss, int queue)
    {
        var recent = done.Where(x => x.EndSeconds > now - window && x.Error is null).ToList();
        int errors = done.Count(x => x.Error is not null), altered = done.Count(x => x.Error == "altered");
        return $"[{TimeSpan.FromSeconds(now):mm\\:ss}] requests {done.Count} (+{done.Count - reported}), tokens {done.Sum(x => (long)x.Tokens)}, errors {errors} (altered {altered}); " +
               $"last {window:F0} s: TTFT p50/p99 {SoakStats.Percentile(recent.Select(x => x.TtftMs), 50):F0}/{SoakStats.Percentile(recent.Select(x => x.TtftMs), 99):F0} ms, " +
               $"TPOT p50/p99 {SoakStats.Percentile(recent.Select(x => x.TpotMs), 50):F1}/{SoakStats.Percentile(recent.Select(x => x.TpotMs), 99):F1} ms; decode queue {queue}; " +
               "RSS " + string.Join(", ", rss.MiB.Select(kv => $"{kv.Key} {kv.Value:F0}")) + $" MiB; load {LoadAverage()}";
    }

    /// <summary>Sequences waiting for KV room on the decode worker (its llm_decode_queue_length gauge); -1 if unreadable.</summary>
    private static async Task<int> DecodeQueue(HttpClient http, string decodeHttp)
    {
        try
        {
            foreach (var line in (await http.GetStringAsync($"{decodeHttp}/metrics")).Split('\n'))
                if (line.StartsWith("llm_decode_queue_length", StringComparison.Ordinal) && double.TryParse(line.Split(' ')[^1], CultureInfo.InvariantCulture, out var v))
                    return (int)v;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
        return -1;
    }

    /// <summary>The gateway's workers are probed every 2 s; the first stream waits for them.</summary>
    private static async Task WaitUntilGenerating(Gateway.GatewayClient gateway, SoakRequest probe)
    {
        for (var deadline = DateTime.UtcNow.AddSeconds(60); ; await Task.Delay(500))
        {
            try
            {
                using var call = gateway.Generate(probe.ToWire(), deadline: DateTime.UtcNow.AddSeconds(30));
                await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }
                return;
            }
            catch (RpcException) when (DateTime.UtcNow < deadline) { }
        }
    }

    private static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
    }
}
