using System.Collections.Concurrent;
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Grpc.Core;
using LlmCluster.V1;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench chaos` (issue 21): trials that each start a seeded stream through a cluster of separate
/// processes (`llmctl up` with two decode workers and a Redis it does not own) and SIGKILL one randomly
/// chosen service (prefill, decode, cache manager, gateway, Redis) at a random moment. The client does
/// what the API says: on an error it resumes the session after the last token it received (a new
/// Generate only if it never got the session id). Every trial's tokens are compared with the local
/// run of the same prompt and seed: lost, duplicated and altered tokens are counted, per service.
/// </summary>
internal static partial class BenchChaosCommand
{
    private static readonly string[] Targets = ["prefill", "decode", "cachemanager", "gateway", "redis"];
    private static readonly TimeSpan AttemptDeadline = TimeSpan.FromSeconds(30);

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model (default: ../shared's stories260K via LLMCLUSTER_SHARED, else a generated one)" };
        var trials = new Option<int>("--trials") { Description = "trials", DefaultValueFactory = _ => 100 };
        var tokens = new Option<int>("--tokens") { Description = "tokens per stream", DefaultValueFactory = _ => 300 };
        var seed = new Option<int>("--seed") { Description = "seed of the trial plan (targets, moments, prompts)", DefaultValueFactory = _ => 1 };
        var policy = new Option<string>("--policy") { Description = "KV policy of the streams", DefaultValueFactory = _ => "sink_window(4,60)" };
        var offset = new Option<int>("--port-offset") { Description = "port offset of the cluster", DefaultValueFactory = _ => 3000 };
        var json = new Option<bool>("--json") { Description = "print the summary as JSON" };
        var cmd = new Command("chaos", "kill a random service mid-stream, resume, and check every token against the local run") { model, trials, tokens, seed, policy, offset, json };
        cmd.SetAction(r => CommandErrors.Run(() => Run(r.GetValue(model), r.GetValue(trials), r.GetValue(tokens), r.GetValue(seed), r.GetValue(policy)!, r.GetValue(offset), r.GetValue(json)).GetAwaiter().GetResult()));
        return cmd;
    }

    private sealed record Outcome(string Target, bool Ok, int Lost, int Duplicated, int Altered, double Seconds, string? Error, bool MidStream);

    private static async Task<int> Run(string? modelArg, int trials, int tokens, int seed, string policy, int offset, bool json)
    {
        if (trials < 1 || tokens < 2) throw new ArgumentException("--trials must be >= 1 and --tokens >= 2");
        var shared = Environment.GetEnvironmentVariable("LLMCLUSTER_SHARED");
        var modelPath = ModelSource.ResolvePath(modelArg ?? (shared is null ? null : Path.Combine(shared, "models", "stories260K")));
        using var local = ModelLoader.Load(modelPath);
        var tokenizer = ModelLoader.LoadTokenizer(modelPath, local.Config);
        var localPolicy = KvPolicyRegistry.Parse(policy);

        await using var redis = new ChaosRedis();
        var lines = new ConcurrentQueue<string>();
        using var up = StartUp(modelPath, redis.Address, offset, policy, lines);
        var pids = new ServicePids(lines);
        try
        {
            await WaitFor(() => lines.Any(l => l.StartsWith("Ctrl-C stops", StringComparison.Ordinal)), up, lines, TimeSpan.FromMinutes(3), "the cluster to come up");
            using var channel = GrpcChannels.Create($"127.0.0.1:{50051 + offset}");
            var client = new Gateway.GatewayClient(channel);
            var rng = new Random(seed);
            string[] prompts = ["Once upon a time", "The little dog", "One day, Lily went to the park", "Tom had a red ball", "The sun was hot and"];

            // A warm-up stream measures how long one takes, so that kill moments fall inside streams.
            var warm = Stopwatch.StartNew();
            await RunTrial(client, Request(prompts[0], 1, tokens, policy), kill: null, CancellationToken.None);
            double streamSeconds = warm.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"cluster up; one {tokens}-token stream takes {streamSeconds:F2} s; {trials} trials ...");

            var outcomes = new List<Outcome>();
            for (int t = 0; t < trials; t++)
            {
                var target = Targets[rng.Next(Targets.Length)];
                var delay = TimeSpan.FromSeconds(rng.NextDouble() * 0.8 * streamSeconds);
                var prompt = prompts[rng.Next(prompts.Length)];
                long streamSeed = rng.NextInt64(1, long.MaxValue);
                var p = new SamplingParameters { Temperature = 0.8f, TopP = 0.95f, Seed = streamSeed, MaxTokens = tokens, IgnoreEos = true };
                var expected = GenerationOutput.Collect(new TextGenerator(local, tokenizer).Generate(tokenizer.Encode(prompt, true), p, policy: localPolicy)).Single().Ids;

                var sw = Stopwatch.StartNew();
                using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
                async Task Kill()
                {
                    await Task.Delay(delay);
                    if (target == "redis") await redis.KillAndRestartAsync();
                    else pids.KillOne(target);
                }
                List<int> got;
                string? error = null;
                bool midStream = false;
                var attempts = new List<string>();
                try
                {
                    (got, midStream) = await RunTrial(client, Request(prompt, streamSeed, tokens, policy), Kill, timeout.Token, attempts);
                }
                catch (Exception e) when (e is RpcException or OperationCanceledException or TimeoutException or InvalidOperationException)
                {
                    got = [];
                    error = e.Message;
                }
                var o = Compare(target, expected, got, sw.Elapsed.TotalSeconds, error) with { MidStream = midStream };
                outcomes.Add(o);
                Console.Error.WriteLine($"trial {t + 1}/{trials}: kill {target} at {delay.TotalSeconds:F2} s: {(o.Ok ? "ok" : $"FAILED lost {o.Lost} dup {o.Duplicated} altered {o.Altered} {o.Error}")} ({o.Seconds:F1} s, {attempts.Count} retries)");
                foreach (var a in attempts) Console.Error.WriteLine($"    {a}");
                if (!o.Ok) foreach (var l in lines.TakeLast(20)) Console.Error.WriteLine($"    | {l}");
                // Let a killed service come back (its process, then the gateway answering a health
                // check) before the next trial, so that a trial's time is its own recovery only.
                await WaitFor(() => pids.AllAlive(), up, lines, TimeSpan.FromMinutes(2), "every service to be back");
                await WaitServing(channel, TimeSpan.FromMinutes(2));
                await Task.Delay(500);
            }
            Report(outcomes, json);
            return outcomes.All(o => o.Ok) ? 0 : 1;
        }
        finally
        {
            if (!up.HasExited)
            {
                Process.Start("kill", ["-TERM", up.Id.ToString()])!.WaitForExit();
                if (!up.WaitForExit(60_000)) up.Kill(entireProcessTree: true);
            }
        }
    }

    private static GenerateRequest Request(string prompt, long seed, int tokens, string policy) => new()
    {
        Text = prompt,
        Sampling = SamplingWire.FromEngine(new SamplingParameters { Temperature = 0.8f, TopP = 0.95f, Seed = seed, MaxTokens = tokens, IgnoreEos = true }),
        KvPolicy = PolicyMapping.ToWire(policy),
    };

    /// <summary>One stream to its end, resuming after every failure as a client should: after the last
    /// token received, on the same gateway address (`up` restarts a dead gateway on its port).</summary>
    /// <returns>The tokens, and whether the kill landed before the stream completed.</returns>
    private static async Task<(List<int> Tokens, bool KilledMidStream)> RunTrial(Gateway.GatewayClient client, GenerateRequest request, Func<Task>? kill, CancellationToken ct, List<string>? attemptLog = null)
    {
        var attempts = attemptLog ?? [];
        var got = new List<int>();
        string? session = null;
        bool complete = false;
        var killing = kill?.Invoke() ?? Task.CompletedTask;
        while (!complete)
        {
            ct.ThrowIfCancellationRequested();
            try
            {
                // A client's deadline per attempt: a call that hangs is abandoned and resumed, as a real
                // client would (each one is logged, so hangs are visible in the trial's record).
                var deadline = DateTime.UtcNow + AttemptDeadline;
                using var call = session is null
                    ? client.Generate(request, deadline: deadline, cancellationToken: ct)
                    : client.Resume(new ResumeRequest { SessionId = session, AfterIndex = got.Count - 1 }, deadline: deadline, cancellationToken: ct);
                await foreach (var r in call.ResponseStream.ReadAllAsync(ct))
                {
                    switch (r.ResponseCase)
                    {
                        case GenerateResponse.ResponseOneofCase.Started: session ??= r.Started.SessionId; break;
                        case GenerateResponse.ResponseOneofCase.Chunk:
                            if (r.Chunk.TokenOffset != got.Count) throw new InvalidOperationException($"token offset {r.Chunk.TokenOffset} after {got.Count} tokens");
                            got.AddRange(r.Chunk.TokenIds);
                            break;
                        case GenerateResponse.ResponseOneofCase.Complete: complete = true; break;
                    }
                }
                if (!complete) throw new RpcException(new Status(StatusCode.Unavailable, "stream ended without completion"));
            }
            catch (RpcException e) when (!ct.IsCancellationRequested)
            {
                attempts.Add($"{(session is null ? "generate" : "resume")} after {got.Count}: {e.StatusCode} {e.Status.Detail}");
                await Task.Delay(300, ct); // the service that died is restarted by `up` (backoff from 1 s)
            }
        }
        bool midStream = killing.IsCompleted;
        await killing;
        return (got, midStream && kill is not null);
    }

    private static Outcome Compare(string target, IReadOnlyList<int> expected, List<int> got, double seconds, string? error)
    {
        int common = Math.Min(expected.Count, got.Count), altered = 0;
        for (int i = 0; i < common; i++) if (expected[i] != got[i]) altered++;
        int lost = Math.Max(0, expected.Count - got.Count), duplicated = Math.Max(0, got.Count - expected.Count);
        return new Outcome(target, error is null && altered == 0 && lost == 0 && duplicated == 0, lost, duplicated, altered, seconds, error, false);
    }

    private static void Report(List<Outcome> outcomes, bool json)
    {
        var rows = Targets.Select(t => (Target: t, Rows: outcomes.Where(o => o.Target == t).ToList())).Where(x => x.Rows.Count > 0).ToList();
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                trials = outcomes.Count,
                ok = outcomes.Count(o => o.Ok),
                killed_mid_stream = outcomes.Count(o => o.MidStream),
                lost = outcomes.Sum(o => o.Lost),
                duplicated = outcomes.Sum(o => o.Duplicated),
                altered = outcomes.Sum(o => o.Altered),
                per_service = rows.ToDictionary(r => r.Target, r => new { trials = r.Rows.Count, ok = r.Rows.Count(o => o.Ok), mean_seconds = r.Rows.Average(o => o.Seconds) }),
            }));
            return;
        }
        Console.WriteLine($"{outcomes.Count} trials ({outcomes.Count(o => o.MidStream)} killed mid-stream): {outcomes.Count(o => o.Ok)} exact, {outcomes.Sum(o => o.Lost)} tokens lost, {outcomes.Sum(o => o.Duplicated)} duplicated, {outcomes.Sum(o => o.Altered)} altered");
        Console.WriteLine("| killed | trials | mid-stream | exact | lost | duplicated | altered | failed | mean trial s |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var (t, r) in rows)
            Console.WriteLine($"| {t} | {r.Count} | {r.Count(o => o.MidStream)} | {r.Count(o => o.Ok)} | {r.Sum(o => o.Lost)} | {r.Sum(o => o.Duplicated)} | {r.Sum(o => o.Altered)} | {r.Count(o => o.Error is not null)} | {r.Average(o => o.Seconds):F1} |");
    }

    private static Process StartUp(string model, string redis, int offset, string policy, ConcurrentQueue<string> lines)
    {
        var psi = LocalCluster.SelfInvocation(["up", "--model", model, "--redis", redis, "--decode", "2", "--threads", "1", "--port-offset", offset.ToString(), "--policy", policy]);
        psi.RedirectStandardOutput = psi.RedirectStandardError = true;
        var up = Process.Start(psi)!;
        up.OutputDataReceived += (_, e) => { if (e.Data is { } l) lines.Enqueue(l); };
        up.ErrorDataReceived += (_, e) => { if (e.Data is { } l) lines.Enqueue(l); };
        up.BeginOutputReadLine();
        up.BeginErrorReadLine();
        return up;
    }

    /// <summary>Waits until the gateway answers grpc.health.v1 with SERVING.</summary>
    private static async Task WaitServing(Grpc.Net.Client.GrpcChannel channel, TimeSpan limit)
    {
        var health = new Grpc.Health.V1.Health.HealthClient(channel);
        for (var deadline = DateTime.UtcNow + limit; ; await Task.Delay(200))
        {
            try
            {
                var r = await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(2));
                if (r.Status == Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving) return;
            }
            catch (RpcException) when (DateTime.UtcNow < deadline) { }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the gateway did not serve within {limit.TotalSeconds:F0} s");
        }
    }

    private static async Task WaitFor(Func<bool> done, Process up, ConcurrentQueue<string> lines, TimeSpan limit, string what)
    {
        for (var deadline = DateTime.UtcNow + limit; !done(); await Task.Delay(100))
        {
            if (up.HasExited) throw new InvalidOperationException("llmctl up exited:\n" + string.Join("\n", lines.TakeLast(30)));
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"waited {limit.TotalSeconds:F0} s for {what}:\n" + string.Join("\n", lines.TakeLast(30)));
        }
    }

    /// <summary>The live pid of each service of `up`, from its "ready" and "restarted" lines.</summary>
    private sealed partial class ServicePids(ConcurrentQueue<string> lines)
    {
        private readonly Random _pick = new(7);

        private List<(string Role, int Pid)> Current()
        {
            var all = new List<(string Role, int Pid)>();
            foreach (var line in lines)
            {
                var m = Ready().Match(line);
                if (!m.Success) m = Restarted().Match(line);
                if (m.Success) all.Add((m.Groups[1].Value, int.Parse(m.Groups[2].Value)));
            }
            return all;
        }

        private static bool Alive(int pid)
        {
            try { return !Process.GetProcessById(pid).HasExited; }
            catch (ArgumentException) { return false; }
        }

        public void KillOne(string role)
        {
            var live = Current().Where(x => x.Role == role && Alive(x.Pid)).ToList();
            if (live.Count == 0) return;
            var victim = live[_pick.Next(live.Count)];
            try { Process.GetProcessById(victim.Pid).Kill(); } catch (ArgumentException) { }
        }

        /// <summary>Each role has as many live processes as it had at the start.</summary>
        public bool AllAlive()
        {
            var all = Current();
            var readyCounts = lines.Select(l => Ready().Match(l)).Where(m => m.Success).GroupBy(m => m.Groups[1].Value).ToDictionary(g => g.Key, g => g.Count());
            return readyCounts.All(kv => all.Count(x => x.Role == kv.Key && Alive(x.Pid)) >= kv.Value);
        }

        [GeneratedRegex(@"^\s+(\w+)\s+ready\s+\S+\s+\(pid (\d+)\)")]
        private static partial Regex Ready();

        [GeneratedRegex(@"^(\w+) restarted \(pid (\d+),")]
        private static partial Regex Restarted();
    }

    /// <summary>A redis-server with append-only persistence fsynced on every write, that a trial may
    /// kill and that then comes back on the same port with its data.</summary>
    private sealed class ChaosRedis : IAsyncDisposable
    {
        private readonly string _dir = Directory.CreateTempSubdirectory("llmcluster-chaos-redis-").FullName;
        private readonly int _port;
        private Process _process;

        public ChaosRedis()
        {
            _port = LocalCluster.FreePort();
            _process = LocalCluster.StartRedisServer(_port, _dir, fsyncAlways: true);
            WaitListening().GetAwaiter().GetResult();
        }

        public string Address => $"127.0.0.1:{_port}";

        private async Task WaitListening()
        {
            for (int i = 0; i < 100; i++)
            {
                try
                {
                    using var c = new System.Net.Sockets.TcpClient();
                    await c.ConnectAsync(System.Net.IPAddress.Loopback, _port);
                    return;
                }
                catch (System.Net.Sockets.SocketException) { await Task.Delay(50); }
            }
            throw new TimeoutException("redis-server did not listen");
        }

        public async Task KillAndRestartAsync()
        {
            _process.Kill();
            await _process.WaitForExitAsync();
            _process.Dispose();
            await Task.Delay(500); // down for a moment, as a crashed server is
            _process = LocalCluster.StartRedisServer(_port, _dir, fsyncAlways: true);
            await WaitListening();
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited) _process.Kill();
            await _process.WaitForExitAsync();
            _process.Dispose();
            try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        }
    }
}
