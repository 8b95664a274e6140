using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using System.Text.Json;
using Cluster.Engine.KvCache;
using Cluster.Engine.Compression;
using Cluster.Engine.Model;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench streaming`: per-token decode latency and KV memory of StreamingLLM's sink_window
/// against the sliding window with re-computation baseline, which re-runs the last C tokens from
/// scratch at every step (Xiao et al. 2023, section 4.5, figure 10: up to 22.2x at equal cache size).
/// With --stream-tokens it also streams that many tokens through sink_window and records memory.
/// </summary>
internal static class BenchStreamingCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model to measure (default: a generated random-weight model)" };
        var sizes = new Option<string>("--sizes") { Description = "comma-separated cache sizes", DefaultValueFactory = _ => "128,256,512,1024,2048" };
        var steps = new Option<int>("--steps") { Description = "decode steps measured per cache size", DefaultValueFactory = _ => 16 };
        var sinks = new Option<int>("--sinks") { Description = "attention sinks of sink_window", DefaultValueFactory = _ => SinkWindowPolicy.DefaultSinks };
        var streamTokens = new Option<int>("--stream-tokens") { Description = "also stream this many tokens through sink_window(sinks, 252) and record memory (0: skip)", DefaultValueFactory = _ => 0 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var cmd = new Command("streaming", "sink_window decode vs sliding window with re-computation, and memory over a long stream") { model, sizes, steps, sinks, streamTokens, threads, json };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var cacheSizes = r.GetValue(sizes)!.Split(',').Select(s => int.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > r.GetValue(sinks)
                ? v : throw new ArgumentException($"--sizes: '{s}' is not a cache size larger than --sinks")).ToArray();
            int n = r.GetValue(steps), s = r.GetValue(sinks);
            if (n < 1) throw new ArgumentException($"--steps must be at least 1, got {n}");
            var path = ModelSource.ResolvePath(r.GetValue(model));
            using var m = ModelSource.Load(path, r.GetValue(threads));
            var rows = cacheSizes.Select(c =>
            {
                Console.Error.WriteLine($"cache {c}: sink_window({s},{c - s}) vs re-computation, {n} steps ...");
                return Measure(m, c, s, n);
            }).ToList();
            var memory = r.GetValue(streamTokens) > 0 ? StreamMemory(m, s, r.GetValue(streamTokens)) : null;
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { model = path, backend = m.Backend.Name, steps = n, sizes = rows, stream = memory }));
            else
            {
                Console.WriteLine($"model {path} on {m.Backend.Name}, median of {8 * n} sink_window and {n} re-computation decode steps");
                Console.WriteLine("| cache | KV bytes | sink_window ms/token | re-computation ms/token | speed-up |");
                Console.WriteLine("|---:|---:|---:|---:|---:|");
                foreach (var x in rows) Console.WriteLine($"| {x.cache} | {x.kv_bytes} | {x.sink_window_ms:F3} | {x.recompute_ms:F3} | {x.speedup:F1}x |");
                if (memory is not null)
                {
                    Console.WriteLine($"\nstreaming {r.GetValue(streamTokens)} tokens through sink_window({s},252):");
                    Console.WriteLine("| tokens seen | cache slots | KV bytes | managed heap MB | working set MB |");
                    Console.WriteLine("|---:|---:|---:|---:|---:|");
                    foreach (var p in memory) Console.WriteLine($"| {p.tokens} | {p.capacity} | {p.kv_bytes} | {p.managed_mb:F1} | {p.working_set_mb:F1} |");
                }
            }
            return 0;
        }));
        return cmd;
    }

    private sealed record SizeRow(int cache, long kv_bytes, double sink_window_ms, double recompute_ms, double speedup);

    private sealed record MemoryPoint(int tokens, int capacity, long kv_bytes, double managed_mb, double working_set_mb);

    private static long KvBytes(LlamaConfig c, int slots) => 2L * c.Layers * c.KvHeads * slots * c.HeadDim * sizeof(float);

    private static SizeRow Measure(LlamaModel m, int size, int sinks, int steps)
    {
        var rng = new Random(size);
        var history = Enumerable.Range(0, size + steps).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        var logits = new float[m.Config.VocabSize];

        // sink_window: fill the cache, then each step evicts one token and re-rotates the window's keys.
        using var cache = m.CreateCache(size, new SinkWindowPolicy(sinks, size - sinks));
        KvRoom.Forward(m, history.AsSpan(0, size), cache, logits);
        // Decode steps are cheap, so they are repeated over the same tokens (after a warm-up long enough
        // for tiered JIT to reach its final code) to make the median robust to other load on the machine.
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < 200 || warm.ElapsedMilliseconds < 500; i++) KvRoom.Forward(m, history.AsSpan(size + i % steps, 1), cache, logits);
        var sink = new double[steps * 8];
        for (int i = 0; i < sink.Length; i++)
        {
            var sw = Stopwatch.StartNew();
            KvRoom.Forward(m, history.AsSpan(size + i % steps, 1), cache, logits);
            sink[i] = sw.Elapsed.TotalMilliseconds;
        }

        // Re-computation: every step runs the last `size` tokens from an empty cache of the same size.
        using var scratch = m.CreateCache(size, DensePolicy.Extrapolating); // sizes may pass a small model's context: timing only
        var recompute = new double[steps];
        for (int i = -1; i < steps; i++)
        {
            scratch.Truncate(0);
            var sw = Stopwatch.StartNew();
            KvRoom.Forward(m, history.AsSpan(i + 1, size), scratch, logits);
            if (i >= 0) recompute[i] = sw.Elapsed.TotalMilliseconds;
        }
        double a = Median(sink), b = Median(recompute);
        return new SizeRow(size, KvBytes(m.Config, size), a, b, b / a);
    }

    /// <summary>Greedy decoding from BOS for <paramref name="tokens"/> steps through sink_window(sinks, 252),
    /// sampling memory ten times: the cache must stay at its budget whatever the stream's length.</summary>
    private static List<MemoryPoint> StreamMemory(LlamaModel m, int sinks, int tokens)
    {
        var points = new List<MemoryPoint>();
        using var cache = m.CreateCache(64, new SinkWindowPolicy(sinks, 252));
        var logits = new float[m.Config.VocabSize];
        int next = m.Config.BosId;
        var process = Process.GetCurrentProcess();
        var sw = Stopwatch.StartNew();
        for (int t = 1; t <= tokens; t++)
        {
            KvRoom.Forward(m, [next], cache, logits);
            next = TensorPrimitives.IndexOfMax(logits);
            if (t % Math.Max(1, tokens / 10) == 0 || t == tokens)
            {
                process.Refresh();
                points.Add(new MemoryPoint(cache.TokensSeen, cache.Capacity, KvBytes(m.Config, cache.Capacity),
                    GC.GetTotalMemory(false) / 1e6, process.WorkingSet64 / 1e6));
                Console.Error.Write($"\rstreamed {t}/{tokens} tokens ({t / sw.Elapsed.TotalSeconds:F0} tokens/s)");
            }
        }
        Console.Error.WriteLine();
        return points;
    }

    private static double Median(double[] values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}
