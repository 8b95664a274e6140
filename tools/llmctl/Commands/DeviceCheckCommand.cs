using System.CommandLine;
using System.Text.Json;
using Cluster.Engine.KvCache;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl device-check`: the same model on the CPU backend and on --device, compared: the largest
/// logit difference over a prefill of --tokens tokens and whether greedy generation gives the same
/// tokens. Exit 0 when both hold, 1 when not (the GPU acceptance check of gpu-check.sh).
/// </summary>
internal static class DeviceCheckCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "llama2.c .bin file or Hugging Face folder" };
        var tokens = new Option<int>("--tokens") { Description = "prompt tokens whose logits are compared (random ids, seed 1)", DefaultValueFactory = _ => 64 };
        var generate = new Option<int>("--generate") { Description = "greedy tokens generated from BOS on both", DefaultValueFactory = _ => 60 };
        var tolerance = new Option<double>("--tolerance") { Description = "largest allowed |logit difference|", DefaultValueFactory = _ => 1e-3 };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = new DeviceOptions();
        var cmd = new Command("device-check", "compare a device's logits and greedy tokens with the CPU backend's") { model, tokens, generate, tolerance, json };
        device.AddTo(cmd);
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var path = ModelSource.ResolvePath(r.GetValue(model));
            int n = r.GetValue(tokens), g = r.GetValue(generate);
            if (n < 1 || g < 1) throw new ArgumentException("--tokens and --generate must be >= 1");
            using var dev = ModelSource.Load(path, () => device.Create(r, null), maxChunk: Math.Max(n, 16));
            using var cpu = ModelSource.Load(path, () => new CpuBackend(), maxChunk: Math.Max(n, 16));
            var rng = new Random(1);
            var ids = Enumerable.Range(0, n).Select(_ => rng.Next(3, cpu.Config.VocabSize)).ToArray();
            double maxDiff = MaxAbsDiff(AllLogits(cpu, ids), AllLogits(dev, ids));

            var p = new SamplingParameters { Temperature = 0, MaxTokens = g };
            int bos = cpu.Config.BosId;
            var cpuIds = new TextGenerator(cpu).Generate([bos], p).Select(c => c.TokenId!.Value).ToArray();
            var devIds = new TextGenerator(dev).Generate([bos], p).Select(c => c.TokenId!.Value).ToArray();
            string? Text(int[] t)
            {
                try { return ModelLoader.LoadTokenizer(path, cpu.Config).Decode([bos, .. t]); }
                catch (Exception e) when (e is FileNotFoundException or ModelFormatException or InvalidDataException) { return null; }
            }
            bool ok = maxDiff <= r.GetValue(tolerance) && cpuIds.SequenceEqual(devIds);
            var result = new
            {
                model = path,
                cpu_backend = cpu.Backend.Name,
                device_backend = dev.Backend.Name,
                prompt_tokens = n,
                max_abs_logit_diff = maxDiff,
                tolerance = r.GetValue(tolerance),
                greedy_tokens = g,
                greedy_equal = cpuIds.SequenceEqual(devIds),
                first_greedy_difference = Enumerable.Range(0, Math.Min(cpuIds.Length, devIds.Length)).FirstOrDefault(i => cpuIds[i] != devIds[i], -1),
                cpu_text = Text(cpuIds),
                device_text = Text(devIds),
                ok,
            };
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                Console.WriteLine($"device                  {result.device_backend}");
                Console.WriteLine($"max |logit diff|        {maxDiff:E2} over {n} tokens (tolerance {result.tolerance:E0})");
                Console.WriteLine($"greedy tokens equal     {result.greedy_equal} ({g} tokens)");
                if (result.device_text is not null) Console.WriteLine($"device text             {result.device_text}");
                Console.WriteLine(ok ? "OK" : "MISMATCH");
            }
            return ok ? 0 : 1;
        }));
        return cmd;
    }

    private static float[] AllLogits(LlamaModel m, int[] ids)
    {
        var logits = new float[(long)ids.Length * m.Config.VocabSize];
        using var cache = m.CreateCache(ids.Length);
        KvRoom.Forward(m, ids, cache, logits, allLogits: true);
        return logits;
    }

    private static double MaxAbsDiff(float[] a, float[] b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }
}
