using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Synthesis;
using Cluster.Serving.Kv;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench checkpoint`: what a decode worker's incremental checkpoint costs on its batch thread (the
/// step waits for it), the delta read from the live cache (<see cref="KvDelta.Diff(KvDigest, IComputeBackend, SequenceKvCache, ref float[], out KvDigest)"/>)
/// against the last checkpoint's digest. Two ways in one run: the digest bound to the live layers (only the
/// rows appended since are read and hashed) and the same digest unbound (every row read and hashed, as
/// before issue 17's fourteenth session). Only the cache runs: a dense cache of a preset's shape with random
/// rows, NEW rows appended before each timed diff.
/// </summary>
internal static class BenchCheckpointCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "model shape (layers, KV heads, head dim)", DefaultValueFactory = _ => "smollm2-135m" };
        var sizes = new Option<string>("--sizes") { Description = "comma-separated cache lengths in tokens", DefaultValueFactory = _ => "236,1809" };
        var every = new Option<int>("--every") { Description = "tokens appended between checkpoints", DefaultValueFactory = _ => 16 };
        var reps = new Option<int>("--reps") { Description = "checkpoints timed per size and way", DefaultValueFactory = _ => 20 };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var cmd = new Command("checkpoint", "an incremental checkpoint's diff of the live cache: appended rows only vs every row") { preset, sizes, every, reps, json };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int n = r.GetValue(reps), step = r.GetValue(every);
            if (n < 1 || step < 1) throw new ArgumentException($"--reps and --every must be at least 1, got {n} and {step}");
            var lengths = r.GetValue(sizes)!.Split(',').Select(x => int.TryParse(x.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v : throw new ArgumentException($"--sizes: '{x}' is not a token count")).ToArray();
            var config = ModelPresets.Get(r.GetValue(preset)!);
            using var backend = new CpuBackend(1);
            var rows = new List<Row>();
            foreach (var tokens in lengths)
            {
                Console.Error.WriteLine($"cache of {tokens} tokens: {n} checkpoints of {step} new tokens each way ...");
                var (appended, every_row) = Measure(backend, config.Layers, config.KvHeads, config.HeadDim, tokens, step, n);
                rows.Add(new Row(tokens, appended, every_row, every_row / appended));
            }
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { preset = r.GetValue(preset), every = step, reps = n, sizes = rows }));
            else
            {
                Console.WriteLine($"checkpoint diff on a {r.GetValue(preset)} cache ({config.Layers} layers x {config.KvHeads} KV heads x head dim {config.HeadDim}, fp32), {step} new tokens, median of {n}");
                Console.WriteLine("| cache tokens | appended rows only ms | every row ms | speed-up |");
                Console.WriteLine("|---:|---:|---:|---:|");
                foreach (var x in rows) Console.WriteLine($"| {x.tokens} | {x.appended_ms:F2} | {x.every_row_ms:F2} | {x.speedup:F1}x |");
            }
            return 0;
        }));
        return cmd;
    }

    private sealed record Row(int tokens, double appended_ms, double every_row_ms, double speedup);

    /// <summary>Median milliseconds per checkpoint, bound digest and unbound, taking turns on one cache.</summary>
    private static (double Appended, double EveryRow) Measure(IComputeBackend backend, int layers, int kvHeads, int headDim, int tokens, int every, int reps)
    {
        int warmup = 3;
        using var cache = new SequenceKvCache(backend, layers, kvHeads, headDim, tokens + (reps + warmup) * every, DensePolicy.Default);
        var rng = new Random(tokens);
        Append(backend, cache, tokens, rng);
        var blocks = Enumerable.Range(0, layers).Select(l => KvCacheSnapshot.Capture(backend, cache, l)).ToList();
        float[] scratch = [];
        KvDelta.Diff(KvDigest.Of(blocks, headDim), backend, cache, ref scratch, out var bound);
        var appended = new List<double>();
        var everyRow = new List<double>();
        for (int i = 0; i < reps + warmup; i++)
        {
            Append(backend, cache, every, rng);
            var unbound = KvDigest.Of(bound.Layers.Select(l => l with { Source = null }));
            GC.Collect();
            long start = Stopwatch.GetTimestamp();
            KvDelta.Diff(unbound, backend, cache, ref scratch, out _);
            double whole = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            GC.Collect();
            start = Stopwatch.GetTimestamp();
            KvDelta.Diff(bound, backend, cache, ref scratch, out bound);
            double only = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            if (i < warmup) continue;
            everyRow.Add(whole);
            appended.Add(only);
        }
        return (Median(appended), Median(everyRow));
    }

    private static double Median(List<double> xs)
    {
        xs.Sort();
        return xs[xs.Count / 2];
    }

    /// <summary>Appends <paramref name="count"/> tokens of random rows to every layer.</summary>
    private static void Append(IComputeBackend backend, SequenceKvCache cache, int count, Random rng)
    {
        var c = cache.Layers[0];
        var host = new float[count * c.KvHeads * c.HeadDim];
        for (int i = 0; i < host.Length; i++) host[i] = (float)(rng.NextDouble() * 2 - 1);
        using var k = backend.Allocate(host.Length);
        using var v = backend.Allocate(host.Length);
        backend.CopyFromHost(host, k);
        backend.CopyFromHost(host, v);
        var positions = Enumerable.Range(cache.TokensSeen, count).ToArray();
        foreach (var layer in cache.Layers) backend.AppendKv(k, v, 0, positions, layer);
        KvCacheSnapshot.SetTokensSeen(cache, cache.TokensSeen + count);
    }
}
