using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench`: single-stream prefill, decode and batched decode speed for each weight format,
/// next to the machine's measured memory read bandwidth and the decode bound it implies for that
/// format (every weight byte is read once per token).
/// </summary>
internal static class BenchCommand
{
    /// <summary>Bench lengths are the caller's choice and may pass a small model's context: they only time.</summary>
    private static readonly Cluster.Engine.Compression.DensePolicy Bench = Cluster.Engine.Compression.DensePolicy.Extrapolating;

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model to measure (e.g. a folder from `llmctl synth --preset smollm2-135m`)" };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length for the prefill measurement", DefaultValueFactory = _ => 256 };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "tokens to decode", DefaultValueFactory = _ => 128 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var batch = new Option<int>("--batch") { Description = "also measure batched decode of this many sequences (continuous batching's step)", DefaultValueFactory = _ => 16 };
        var weights = new Option<string?>("--weights") { Description = "weight formats to measure, comma-separated, each loaded in turn: q8_0, bf16, fp16, fp32 (default: as stored)" };
        var chunk = new Option<int>("--chunk") { Description = "most tokens per forward pass (a long prefill runs in chunks of this many; a GPU wants the whole prompt)", DefaultValueFactory = _ => 256 };
        var device = new DeviceOptions();
        var cmd = new Command("bench", "measure prefill and decode tokens/s against the memory-bandwidth bound, per weight format") { model, promptTokens, decodeTokens, threads, json, batch, weights, chunk };
        device.AddTo(cmd);
        cmd.Subcommands.Add(BenchStreamingCommand.Create());
        cmd.Subcommands.Add(BenchLoadCommand.Create());
        cmd.Subcommands.Add(BenchEvictionCommand.Create());
        cmd.Subcommands.Add(BenchCheckpointCommand.Create());
        cmd.Subcommands.Add(BenchKvTransferCommand.Create());
        cmd.Subcommands.Add(BenchChaosCommand.Create());
        cmd.Subcommands.Add(BenchFuzzCommand.Create());
        cmd.Subcommands.Add(BenchSoakCommand.Create());
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int p = r.GetValue(promptTokens), d = r.GetValue(decodeTokens);
            if (p < 1 || d < 2) throw new ArgumentException("--prompt-tokens must be >= 1 and --decode-tokens >= 2");
            int t = r.GetValue(threads) ?? Environment.ProcessorCount;
            var path = ModelSource.ResolvePath(r.GetValue(model));
            // Every format in one run, so their ratios share the machine's state (load, clocks).
            var formats = (r.GetValue(weights) ?? "auto").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var f in formats) Cluster.Engine.Kernels.WeightLayout.ParseOption(f); // reject typos before measuring

            int b = r.GetValue(batch);
            if (r.GetValue(chunk) < Math.Max(1, b)) throw new ArgumentException($"--chunk must be at least --batch ({b})");
            // The host's bandwidth bounds only the CPU backend; a device has its own (not measured here).
            bool onCpu = device.Device(r).Kind == Cluster.Engine.Kernels.Ilgpu.DeviceKind.Cpu;
            if (onCpu) Console.Error.WriteLine($"measuring memory bandwidth ({t} threads) ...");
            double bandwidth = onCpu ? MemoryBandwidth.MeasureBytesPerSecond(t) : double.NaN;
            var results = new List<Dictionary<string, object>>();
            foreach (var format in formats)
            {
                using var m = ModelSource.Load(path, () => device.Create(r, t), r.GetValue(chunk), format);
                var result = Measure(m, path, p, d, b, bandwidth, t);
                result["device"] = device.Device(r).ToString();
                results.Add(result);
                if (!r.GetValue(json)) Print(result, t);
            }
            if (r.GetValue(json)) Console.WriteLine(results.Count == 1 ? JsonSerializer.Serialize(results[0]) : JsonSerializer.Serialize(results));
            else if (results.Count > 1) PrintTable(results);
            return 0;
        }));
        return cmd;
    }

    private static Dictionary<string, object> Measure(LlamaModel m, string path, int p, int d, int b, double bandwidth, int threads)
    {
        var rng = new Random(1);
        var prompt = Enumerable.Range(0, p).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
        var logits = new float[m.Config.VocabSize];
        var format = Cluster.Engine.Kernels.WeightLayout.Name(m.Weights.MatrixFormat);
        Console.Error.WriteLine($"[{format}] prefill {p} tokens, decode {d} tokens on {m.Backend.Name} ...");
        using (var warm = m.CreateCache(p + 8, Bench)) KvRoom.Forward(m, prompt, warm, logits); // page in weights, JIT
        var prefills = new double[3];
        for (int rep = 0; rep < prefills.Length; rep++)
        {
            using var cache = m.CreateCache(p + d, Bench);
            var sw = Stopwatch.StartNew();
            KvRoom.Forward(m, prompt, cache, logits);
            prefills[rep] = sw.Elapsed.TotalSeconds;
        }
        Array.Sort(prefills);
        double prefillSeconds = prefills[0]; // the rate: best of 3
        using var decodeCache = m.CreateCache(p + d, Bench);
        KvRoom.Forward(m, prompt, decodeCache, logits);
        int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
        var steps = new double[d];
        for (int i = 0; i < d; i++)
        {
            var sw = Stopwatch.StartNew();
            KvRoom.Forward(m, [next], decodeCache, logits);
            steps[i] = sw.Elapsed.TotalSeconds;
            next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
        }
        Array.Sort(steps);
        double median = steps[d / 2], mean = steps.Average();
        double batchRate = b > 1 ? BatchedDecodeTokensPerSecond(m, prompt, b, d) : 0;
        long weightBytes = m.Weights.DecodeBytesPerToken;
        double bound = bandwidth / weightBytes;
        return new Dictionary<string, object>
        {
            ["model"] = path,
            ["weights"] = format,
            ["backend"] = m.Backend.Name,
            ["threads"] = threads,
            ["parameters"] = m.Config.ParameterCount,
            ["weight_bytes_per_token"] = weightBytes,
            // null on a device: the host's bandwidth does not bound it (and JSON has no NaN).
            ["memory_bandwidth_gb_per_s"] = double.IsFinite(bandwidth) ? bandwidth / 1e9 : null!,
            ["decode_bound_tokens_per_s"] = double.IsFinite(bound) ? bound : null!,
            ["decode_tokens_per_s"] = 1 / mean,
            ["decode_median_step_ms"] = median * 1e3,
            ["decode_fraction_of_bound"] = double.IsFinite(bound) ? 1 / mean / bound : null!,
            ["batch_size"] = b,
            ["batch_decode_tokens_per_s"] = batchRate,
            ["batch_speedup"] = batchRate * mean,
            ["prefill_tokens"] = p,
            ["prefill_tokens_per_s"] = p / prefillSeconds,
            // Next to a median of requests (the cluster benchmark's TTFT), the median is the like-for-like figure.
            ["prefill_median_ms"] = prefills[prefills.Length / 2] * 1e3,
        };
    }

    private static void Print(Dictionary<string, object> x, int t)
    {
        Console.WriteLine($"weights                 {x["weights"]}");
        Console.WriteLine($"backend                 {x["backend"]}");
        Console.WriteLine($"parameters              {(long)x["parameters"] / 1e6:F1}M, {(long)x["weight_bytes_per_token"] / 1e6:F0} MB of weights read per decoded token");
        if (x["decode_bound_tokens_per_s"] is double bound)
        {
            Console.WriteLine($"memory bandwidth        {(double)x["memory_bandwidth_gb_per_s"]:F1} GB/s (read, {t} threads)");
            Console.WriteLine($"decode bound            {bound:F1} tokens/s (bandwidth / weight bytes)");
            Console.WriteLine($"decode                  {(double)x["decode_tokens_per_s"]:F1} tokens/s (median step {(double)x["decode_median_step_ms"]:F2} ms) = {(double)x["decode_fraction_of_bound"]:P0} of the bound");
        }
        else Console.WriteLine($"decode                  {(double)x["decode_tokens_per_s"]:F1} tokens/s (median step {(double)x["decode_median_step_ms"]:F2} ms)");
        if ((int)x["batch_size"] > 1) Console.WriteLine($"batched decode          {(double)x["batch_decode_tokens_per_s"]:F1} tokens/s with {x["batch_size"]} sequences = {(double)x["batch_speedup"]:F1}x one sequence");
        Console.WriteLine($"prefill                 {(double)x["prefill_tokens_per_s"]:F1} tokens/s ({x["prefill_tokens"]}-token prompt)");
        Console.WriteLine();
    }

    /// <summary>One line per format, with ratios to the first (list fp32 first to read them as speedups).</summary>
    private static void PrintTable(List<Dictionary<string, object>> results)
    {
        double Get(Dictionary<string, object> x, string k) => x[k] is null ? double.NaN : Convert.ToDouble(x[k]);
        var b = results[0];
        Console.WriteLine($"| weights | MB/token | decode bound tok/s | decode tok/s (x {b["weights"]}) | batch-{b["batch_size"]} tok/s (x) | prefill-{b["prefill_tokens"]} tok/s (x) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var x in results)
            Console.WriteLine($"| {x["weights"]} | {Get(x, "weight_bytes_per_token") / 1e6:F0} | {Get(x, "decode_bound_tokens_per_s"):F0} | " +
                              $"{Get(x, "decode_tokens_per_s"):F1} ({Get(x, "decode_tokens_per_s") / Get(b, "decode_tokens_per_s"):F2}x) | " +
                              (Get(b, "batch_size") > 1 ? $"{Get(x, "batch_decode_tokens_per_s"):F0} ({Get(x, "batch_decode_tokens_per_s") / Math.Max(1e-9, Get(b, "batch_decode_tokens_per_s")):F2}x) | " : "- | ") + // --batch 1: not measured
                              $"{Get(x, "prefill_tokens_per_s"):F0} ({Get(x, "prefill_tokens_per_s") / Get(b, "prefill_tokens_per_s"):F2}x) |");
    }

    /// <summary>Tokens/s summed over <paramref name="batch"/> sequences decoding together (one
    /// ForwardBatch per step), each after its own prefill of the prompt.</summary>
    private static double BatchedDecodeTokensPerSecond(LlamaModel m, int[] prompt, int batch, int steps)
    {
        Console.Error.WriteLine($"batched decode: {batch} sequences x {steps} steps ...");
        var caches = Enumerable.Range(0, batch).Select(_ => m.CreateCache(prompt.Length + steps + 1, Bench)).ToList();
        var logits = new float[(long)batch * m.Config.VocabSize];
        try
        {
            foreach (var c in caches) KvRoom.Forward(m, prompt, c, logits.AsSpan(0, m.Config.VocabSize));
            var tokens = new int[batch];
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++)
            {
                foreach (var c in caches) KvRoom.Make(m, c, 1); // lengths only: the capacity is there
                m.ForwardBatch(tokens, caches, logits);
                for (int j = 0; j < batch; j++) tokens[j] = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.AsSpan(j * m.Config.VocabSize, m.Config.VocabSize));
            }
            return (double)batch * steps / sw.Elapsed.TotalSeconds;
        }
        finally
        {
            foreach (var c in caches) c.Dispose();
        }
    }
}
