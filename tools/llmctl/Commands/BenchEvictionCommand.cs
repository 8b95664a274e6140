using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench eviction`: the per-step eviction cost of sink_window (issue 16), the general path
/// (score, sort, compact, re-rotate every moved key) against the fast path (one row moved, the sinks
/// turned), in one run. Only the policy runs: a KV cache of a preset's shape (no weights) is filled to
/// the budget with random keys, then each step appends one token's K/V and times the eviction that
/// brings the cache back to the budget, the work BeforeAppend does before every decode step.
/// </summary>
internal static class BenchEvictionCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "model shape (layers, KV heads, head dim)", DefaultValueFactory = _ => "smollm2-135m" };
        var sizes = new Option<string>("--sizes") { Description = "comma-separated cache sizes (budgets)", DefaultValueFactory = _ => "256,1024,4096" };
        var steps = new Option<int>("--steps") { Description = "evictions timed per cache size and path", DefaultValueFactory = _ => 2000 };
        var sinks = new Option<int>("--sinks") { Description = "attention sinks of sink_window", DefaultValueFactory = _ => SinkWindowPolicy.DefaultSinks };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var cmd = new Command("eviction", "per-step eviction cost of sink_window: general path vs fast path") { preset, sizes, steps, sinks, json };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int s = r.GetValue(sinks), n = r.GetValue(steps);
            if (n < 1) throw new ArgumentException($"--steps must be at least 1, got {n}");
            var cacheSizes = r.GetValue(sizes)!.Split(',').Select(x => int.TryParse(x.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > s
                ? v : throw new ArgumentException($"--sizes: '{x}' is not a cache size larger than --sinks")).ToArray();
            var config = ModelPresets.Get(r.GetValue(preset)!);
            using var backend = new CpuBackend();
            var rope = new RopeTable(config.HeadDim, config.RopeTheta, config.RopeLayout, config.RopeScaling);
            var rows = new List<Row>();
            foreach (var size in cacheSizes)
            {
                Console.Error.WriteLine($"cache {size}: sink_window({s},{size - s}), {n} evictions per path ...");
                var general = Measure(backend, rope, config, new SinkWindowPolicy(s, size - s) { FastEviction = false }, n);
                var fast = Measure(backend, rope, config, new SinkWindowPolicy(s, size - s), n);
                rows.Add(new Row(size, general.Median, general.Mean, fast.Median, fast.Mean, general.Median / fast.Median));
            }
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { preset = r.GetValue(preset), layers = config.Layers, kv_heads = config.KvHeads, head_dim = config.HeadDim, steps = n, sizes = rows }));
            else
            {
                Console.WriteLine($"sink_window({s}, cache - {s}) on a {r.GetValue(preset)} cache ({config.Layers} layers x {config.KvHeads} KV heads x head dim {config.HeadDim}), CPU, {n} evictions per row");
                Console.WriteLine("| cache | general median us | general mean us | fast median us | fast mean us | speed-up (median) |");
                Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
                foreach (var x in rows)
                    Console.WriteLine($"| {x.cache} | {x.general_median_us:F1} | {x.general_mean_us:F1} | {x.fast_median_us:F1} | {x.fast_mean_us:F1} | {x.speedup:F1}x |");
            }
            return 0;
        }));
        return cmd;
    }

    private sealed record Row(int cache, double general_median_us, double general_mean_us, double fast_median_us, double fast_mean_us, double speedup);

    private readonly record struct Timing(double Median, double Mean);

    /// <summary>Microseconds per eviction (median, and mean, which includes the fast path's periodic
    /// whole-cache turn once every budget evictions).</summary>
    private static Timing Measure(IComputeBackend backend, RopeTable rope, LlamaConfig c, KvCompressionPolicy policy, int steps)
    {
        int budget = policy.Budget!.Value, kvDim = c.KvHeads * c.HeadDim;
        using var cache = new SequenceKvCache(backend, c.Layers, c.KvHeads, c.HeadDim, budget + 1, policy);
        using var k = backend.Allocate(kvDim);
        using var v = backend.Allocate(kvDim);
        var rng = new Random(budget);
        var row = new float[kvDim];
        for (int i = 0; i < row.Length; i++) row[i] = (float)(rng.NextDouble() * 2 - 1);
        backend.CopyFromHost(row, k);
        backend.CopyFromHost(row, v);
        for (int t = 0; t < budget; t++) Append(backend, cache, k, v);
        // Warm-up long enough for tiered JIT, and for the fast path to pass a frame wrap.
        int warmup = Math.Max(200, budget + 50);
        for (int t = 0; t < warmup; t++) Step(backend, rope, policy, cache, k, v);
        var us = new double[steps];
        for (int t = 0; t < steps; t++) us[t] = Step(backend, rope, policy, cache, k, v);
        var mean = us.Average();
        Array.Sort(us);
        return new Timing(us[steps / 2], mean);
    }

    /// <summary>One token in, then the timed eviction back to the budget.</summary>
    private static double Step(IComputeBackend backend, RopeTable rope, KvCompressionPolicy policy, SequenceKvCache cache, Tensor k, Tensor v)
    {
        Append(backend, cache, k, v);
        long start = Stopwatch.GetTimestamp();
        policy.Compress(backend, rope, cache);
        return Stopwatch.GetElapsedTime(start).TotalMicroseconds;
    }

    private static void Append(IComputeBackend backend, SequenceKvCache cache, Tensor k, Tensor v)
    {
        int position = cache.TokensSeen;
        foreach (var layer in cache.Layers) backend.AppendKv(k, v, 0, [position], layer);
        KvCacheSnapshot.SetTokensSeen(cache, position + 1);
    }
}
