using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Cluster.Engine.KvCache;
using Cluster.Engine.Synthesis;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using LlmCluster.V1;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench kv-transfer`: how fast a prompt's KV moves to and from the cache manager (issue 17),
/// the PutBlocks / GetBlocks path prefill and decode use, on loopback, with a cache manager started in
/// this process. The KV is random data of a preset's shape (no model needed): the SmolLM2-135M shape
/// with 236 tokens is the 10.9 MB of the issue's measurement.
/// </summary>
internal static class BenchKvTransferCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "model shape (layers, KV heads, head dim)", DefaultValueFactory = _ => "smollm2-135m" };
        var tokens = new Option<int>("--tokens") { Description = "tokens of KV per transfer", DefaultValueFactory = _ => 236 };
        var reps = new Option<int>("--reps") { Description = "transfers timed per direction (after the warm-up ones)", DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { Description = "untimed transfers each way first: JIT tiering, connections, buffers", DefaultValueFactory = _ => 3 };
        var dtype = new Option<string>("--kv-dtype") { Description = "wire precision: fp32, bf16, fp16", DefaultValueFactory = _ => "fp32" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var only = new Option<string>("--only") { Description = "time only put or only get (the other's transfers still run, untimed, where needed): for profiling one direction", DefaultValueFactory = _ => "both" };
        var onBlock = new Option<bool>("--on-block") { Description = "get as the decode worker's prefetch does: each block handed over as it lands and dropped (its arrays reused for the next)" };
        var cmd = new Command("kv-transfer", "KV put/get throughput to an in-process cache manager on loopback") { preset, tokens, reps, warmup, dtype, json, only, onBlock };
        cmd.SetAction(r => CommandErrors.Run(() => Run(ModelPresets.Get(r.GetValue(preset)!), r.GetValue(preset)!, r.GetValue(tokens), r.GetValue(reps), r.GetValue(warmup),
            KvPrecisions.Parse(r.GetValue(dtype)), r.GetValue(json), r.GetValue(only)!, r.GetValue(onBlock)).GetAwaiter().GetResult()));
        return cmd;
    }

    private static async Task<int> Run(Cluster.Engine.Model.LlamaConfig c, string presetName, int tokens, int reps, int warmup, KvPrecision precision, bool json, string only, bool onBlock)
    {
        if (tokens < 1 || reps < 1) throw new ArgumentException("--tokens and --reps must be at least 1");
        if (only is not ("both" or "put" or "get")) throw new ArgumentException("--only is both, put or get");
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--memory-mb", "4096"], new Dictionary<string, string?>());
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        var rng = new Random(1);
        var positions = Enumerable.Range(0, tokens).ToArray();
        var blocks = Enumerable.Range(0, c.Layers).Select(l => new KvLayerBlock(l,
            Enumerable.Range(0, c.KvHeads).Select(_ => positions).ToArray(),
            Enumerable.Range(0, c.KvHeads * tokens * c.HeadDim).Select(_ => (float)rng.NextDouble()).ToArray(),
            Enumerable.Range(0, c.KvHeads * tokens * c.HeadDim).Select(_ => (float)rng.NextDouble()).ToArray())).ToList();
        long kvBytes = blocks.Sum(b => b.DataBytes);             // fp32, as the workers hold it
        long bytes = kvBytes / sizeof(float) * precision.Bytes();  // on the wire
        var layout = KvLayoutMapping.For(c.Layers, c.KvHeads, c.HeadDim, new Cluster.Engine.Model.RopeTable(c.HeadDim, c.RopeTheta, c.RopeLayout, c.RopeScaling), precision);
        Console.Error.WriteLine($"{presetName} shape, {tokens} tokens: {kvBytes / 1e6:F1} MB of fp32 KV per transfer, {bytes / 1e6:F1} MB as {precision.Name()} on the wire, {reps} transfers each way ...");

        async Task<double> Put(int i)
        {
            var sw = Stopwatch.StartNew();
            var header = new PutHeader { SessionId = $"bench-{i}", Layout = layout, Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens };
            var (_, sent) = await KvTransfer.PutAsync(channel, header, blocks, CancellationToken.None);
            if (sent != bytes) throw new InvalidOperationException($"{sent} bytes sent, {bytes} expected");
            return sw.Elapsed.TotalSeconds;
        }
        async Task<double> Get(int i)
        {
            var sw = Stopwatch.StartNew();
            long handed = 0;
            var (_, got, received) = await KvTransfer.GetAsync(channel, $"bench-{i}", 0, CancellationToken.None,
                onBlock: onBlock ? (_, b) => handed += b.DataBytes : null);
            if (received != bytes || got.Sum(b => b.DataBytes) + handed != kvBytes) throw new InvalidOperationException("the cache manager returned a different amount of KV");
            return sw.Elapsed.TotalSeconds;
        }
        // The conversion alone (best of 5, one thread): what a 16-bit dtype adds per transfer on each side.
        double Convert(bool encode)
        {
            var wire = new byte[blocks.Max(b => b.Keys.Length) * precision.Bytes()];
            var widened = new float[blocks.Max(b => b.Keys.Length)];
            double best = double.MaxValue;
            for (int rep = 0; rep < 5; rep++)
            {
                var sw = Stopwatch.StartNew();
                foreach (var b in blocks)
                    foreach (var part in new[] { b.Keys, b.Values })
                    {
                        var bytesOf = wire.AsSpan(0, part.Length * precision.Bytes());
                        if (encode) Cluster.Engine.Kernels.KvConvert.Encode(part, bytesOf, precision);
                        else Cluster.Engine.Kernels.KvConvert.Decode(bytesOf, widened.AsSpan(0, part.Length), precision);
                    }
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            }
            return best;
        }
        for (int i = 0; i < warmup; i++) { await Put(-1 - i); await Get(-1 - i); } // JIT (tiering), connections, buffers
        var puts = new List<double>();
        var gets = new List<double>();
        // CPU time of this process (client and cache manager both) per transfer: on a machine shared with
        // other work it moves less than wall time does, so it is the figure to compare changes by.
        var cpu = System.Diagnostics.Process.GetCurrentProcess();
        // Bytes allocated per transfer (all threads; moves with every copy into a new array, not with load)
        // and chunks the codec read straight into their block.
        // The JIT's background tiering thread is counted apart: in this short process it is still
        // re-compiling the HTTP/2 and gRPC stacks during the timed transfers (a third of the samples in a
        // perf profile), which a long-running service has done long before.
        var cpu0 = cpu.TotalProcessorTime;
        double jit0 = TieringJitCpuMs();
        long alloc0 = GC.GetTotalAllocatedBytes(), direct0 = KvWireCodec.DirectChunks;
        // --only get: the sessions to read are stored first (before the counters start, so they count nothing).
        if (only == "get") { for (int i = 0; i < reps; i++) await Put(i); cpu.Refresh(); cpu0 = cpu.TotalProcessorTime; jit0 = TieringJitCpuMs(); alloc0 = GC.GetTotalAllocatedBytes(); direct0 = KvWireCodec.DirectChunks; }
        for (int i = 0; i < reps; i++) if (only != "get") puts.Add(await Put(i));
        cpu.Refresh();
        var cpu1 = cpu.TotalProcessorTime;
        double jit1 = TieringJitCpuMs();
        long alloc1 = GC.GetTotalAllocatedBytes(), direct1 = KvWireCodec.DirectChunks;
        for (int i = 0; i < reps; i++) if (only != "put") gets.Add(await Get(i));
        cpu.Refresh();
        var cpu2 = cpu.TotalProcessorTime;
        double jit2 = TieringJitCpuMs();
        long alloc2 = GC.GetTotalAllocatedBytes(), direct2 = KvWireCodec.DirectChunks;
        double encodeMs = Convert(true), decodeMs = Convert(false); // after the transfers: code tiered up as in a running worker
        double Median(List<double> xs) => xs.Count == 0 ? double.NaN : xs.Order().ElementAt(xs.Count / 2);
        var result = new Dictionary<string, object>
        {
            ["preset"] = presetName,
            ["tokens"] = tokens,
            ["kv_dtype"] = precision.Name(),
            ["bytes"] = bytes,
            ["fp32_kv_bytes"] = kvBytes,
            ["put_median_ms"] = Median(puts) * 1e3,
            ["get_median_ms"] = Median(gets) * 1e3,
            ["put_mb_per_s"] = bytes / Median(puts) / 1e6,
            ["get_mb_per_s"] = bytes / Median(gets) / 1e6,
            ["encode_ms"] = encodeMs,
            ["decode_ms"] = decodeMs,
            ["put_cpu_ms"] = (cpu1 - cpu0).TotalMilliseconds / reps,
            ["get_cpu_ms"] = (cpu2 - cpu1).TotalMilliseconds / reps,
            ["put_jit_cpu_ms"] = (jit1 - jit0) / reps,
            ["get_jit_cpu_ms"] = (jit2 - jit1) / reps,
            ["put_alloc_mb"] = (alloc1 - alloc0) / 1e6 / reps,
            ["get_alloc_mb"] = (alloc2 - alloc1) / 1e6 / reps,
            ["put_direct_chunks"] = (direct1 - direct0) / reps,
            ["get_direct_chunks"] = (direct2 - direct1) / reps,
        };
        if (json) Console.WriteLine(JsonSerializer.Serialize(result, new JsonSerializerOptions { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
        else
        {
            Console.WriteLine($"put  median {result["put_median_ms"]:F1} ms  = {result["put_mb_per_s"]:F0} MB/s  ({result["put_cpu_ms"]:F1} ms CPU of which {result["put_jit_cpu_ms"]:F1} the tiering JIT, {result["put_alloc_mb"]:F1} MB allocated per transfer, client + server; {result["put_direct_chunks"]} chunks read straight into blocks)");
            Console.WriteLine($"conversion of the whole KV, one thread, best of 5: fp32 to {precision.Name()} {encodeMs:F2} ms, back {decodeMs:F2} ms");
            Console.WriteLine($"get  median {result["get_median_ms"]:F1} ms  = {result["get_mb_per_s"]:F0} MB/s  ({result["get_cpu_ms"]:F1} ms CPU of which {result["get_jit_cpu_ms"]:F1} the tiering JIT, {result["get_alloc_mb"]:F1} MB allocated per transfer, client + server; {result["get_direct_chunks"]} chunks read straight into blocks)");
        }
        return 0;
    }

    /// <summary>CPU time of the runtime's tiered-compilation thread so far, in ms (Linux /proc; 0 elsewhere).</summary>
    private static double TieringJitCpuMs()
    {
        const double msPerTick = 10; // USER_HZ = 100
        double total = 0;
        try
        {
            foreach (var task in Directory.GetDirectories("/proc/self/task"))
            {
                if (!File.ReadAllText(Path.Combine(task, "comm")).StartsWith(".NET Tiered Com", StringComparison.Ordinal)) continue;
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // after "pid (comm) ": state is field 3
                total += (long.Parse(fields[11]) + long.Parse(fields[12])) * msPerTick; // utime, stime: fields 14, 15
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return total;
    }
}
