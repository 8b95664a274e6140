using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Cluster.Engine.Model;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench`: single-stream prefill and decode speed, next to the machine's measured memory
/// read bandwidth and the decode bound it implies (every weight byte is read once per token).
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model to measure (e.g. a folder from `llmctl synth --preset smollm2-135m`)" };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length for the prefill measurement", DefaultValueFactory = _ => 256 };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "tokens to decode", DefaultValueFactory = _ => 128 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var batch = new Option<int>("--batch") { Description = "also measure batched decode of this many sequences (continuous batching's step)", DefaultValueFactory = _ => 16 };
        var chunk = new Option<int>("--chunk") { Description = "most tokens per forward pass (a long prefill runs in chunks of this many; a GPU wants the whole prompt)", DefaultValueFactory = _ => 256 };
        var device = new DeviceOptions();
        var cmd = new Command("bench", "measure prefill and decode tokens/s against the memory-bandwidth bound") { model, promptTokens, decodeTokens, threads, json, batch, chunk };
        device.AddTo(cmd);
        cmd.Subcommands.Add(BenchStreamingCommand.Create());
        cmd.Subcommands.Add(BenchLoadCommand.Create());
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int p = r.GetValue(promptTokens), d = r.GetValue(decodeTokens);
            if (p < 1 || d < 2) throw new ArgumentException("--prompt-tokens must be >= 1 and --decode-tokens >= 2");
            int t = r.GetValue(threads) ?? Environment.ProcessorCount;
            var path = ModelSource.ResolvePath(r.GetValue(model));
            int b = r.GetValue(batch);
            if (r.GetValue(chunk) < Math.Max(1, b)) throw new ArgumentException($"--chunk must be at least --batch ({b})");
            using var m = ModelSource.Load(path, () => device.Create(r, t), r.GetValue(chunk));

            // The host's bandwidth bounds only the CPU backend; a device has its own (not measured here).
            bool onCpu = device.Device(r).Kind == Cluster.Engine.Kernels.Ilgpu.DeviceKind.Cpu;
            if (onCpu) Console.Error.WriteLine($"measuring memory bandwidth ({t} threads) ...");
            double bandwidth = onCpu ? MemoryBandwidth.MeasureBytesPerSecond(t) : double.NaN;
            var rng = new Random(1);
            var prompt = Enumerable.Range(0, p).Select(_ => rng.Next(3, m.Config.VocabSize)).ToArray();
            var logits = new float[m.Config.VocabSize];

            Console.Error.WriteLine($"prefill {p} tokens, decode {d} tokens on {m.Backend.Name} ...");
            using (var warm = m.CreateCache(p + 8)) m.Forward(prompt, warm, logits); // page in weights, JIT
            double prefillSeconds = double.MaxValue;
            for (int rep = 0; rep < 3; rep++)
            {
                using var cache = m.CreateCache(p + d);
                var sw = Stopwatch.StartNew();
                m.Forward(prompt, cache, logits);
                prefillSeconds = Math.Min(prefillSeconds, sw.Elapsed.TotalSeconds);
            }
            using var decodeCache = m.CreateCache(p + d);
            m.Forward(prompt, decodeCache, logits);
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            var steps = new double[d];
            for (int i = 0; i < d; i++)
            {
                var sw = Stopwatch.StartNew();
                m.Forward([next], decodeCache, logits);
                steps[i] = sw.Elapsed.TotalSeconds;
                next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            }
            Array.Sort(steps);
            double median = steps[d / 2], mean = steps.Average();
            double batchRate = b > 1 ? BatchedDecodeTokensPerSecond(m, prompt, b, d) : 0;
            long weightBytes = DecodeBytesPerToken(m.Config);
            double bound = bandwidth / weightBytes;
            var result = new
            {
                model = path,
                backend = m.Backend.Name,
                device = device.Device(r).ToString(),
                parameters = m.Config.ParameterCount,
                weight_bytes_per_token = weightBytes,
                memory_bandwidth_gb_per_s = onCpu ? bandwidth / 1e9 : (double?)null,
                decode_bound_tokens_per_s = onCpu ? bound : (double?)null,
                decode_tokens_per_s = 1 / mean,
                decode_median_step_ms = median * 1e3,
                decode_fraction_of_bound = onCpu ? 1 / mean / bound : (double?)null,
                batch_size = b,
                batch_decode_tokens_per_s = batchRate,
                batch_speedup = batchRate * mean,
                prefill_tokens = p,
                prefill_tokens_per_s = p / prefillSeconds,
            };
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                Console.WriteLine($"backend                 {result.backend}");
                Console.WriteLine($"parameters              {result.parameters / 1e6:F1}M, {weightBytes / 1e6:F0} MB of fp32 weights read per decoded token");
                if (onCpu)
                {
                    Console.WriteLine($"memory bandwidth        {result.memory_bandwidth_gb_per_s:F1} GB/s (read, {t} threads)");
                    Console.WriteLine($"decode bound            {bound:F1} tokens/s (bandwidth / weight bytes)");
                    Console.WriteLine($"decode                  {result.decode_tokens_per_s:F1} tokens/s (median step {result.decode_median_step_ms:F2} ms) = {result.decode_fraction_of_bound:P0} of the bound");
                }
                else Console.WriteLine($"decode                  {result.decode_tokens_per_s:F1} tokens/s (median step {result.decode_median_step_ms:F2} ms)");
                if (b > 1) Console.WriteLine($"batched decode          {batchRate:F1} tokens/s with {b} sequences = {result.batch_speedup:F1}x one sequence");
                Console.WriteLine($"prefill                 {result.prefill_tokens_per_s:F1} tokens/s ({p}-token prompt)");
            }
            return 0;
        }));
        return cmd;
    }

    /// <summary>Tokens/s summed over <paramref name="batch"/> sequences decoding together (one
    /// ForwardBatch per step), each after its own prefill of the prompt.</summary>
    private static double BatchedDecodeTokensPerSecond(LlamaModel m, int[] prompt, int batch, int steps)
    {
        Console.Error.WriteLine($"batched decode: {batch} sequences x {steps} steps ...");
        var caches = Enumerable.Range(0, batch).Select(_ => m.CreateCache(prompt.Length + steps + 1)).ToList();
        var logits = new float[(long)batch * m.Config.VocabSize];
        try
        {
            foreach (var c in caches) m.Forward(prompt, c, logits.AsSpan(0, m.Config.VocabSize));
            var tokens = new int[batch];
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++)
            {
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

    /// <summary>fp32 bytes of every weight a decode step reads: all layer matrices and norms, the
    /// final norm and the classifier (the embedding lookup reads one row, counted as nothing).</summary>
    public static long DecodeBytesPerToken(LlamaConfig c) =>
        4 * ((long)c.Layers * ((long)c.Dim * c.QueryDim * 2 + (long)c.Dim * c.KvDim * 2 + 3L * c.Dim * c.HiddenDim + 2L * c.Dim)
             + (long)c.VocabSize * c.Dim + c.Dim);
}
