using System.CommandLine;
using Cluster.Engine.Kernels;
using Cluster.Engine.Synthesis;

namespace LlmCtl.Commands;

/// <summary>`llmctl synth`: a random-weight Hugging Face checkpoint with a real model's shape.</summary>
internal static class SynthCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = $"model shape: {string.Join(", ", ModelPresets.All.Keys)}", Required = true };
        var output = new Option<string>("--out") { Description = "output folder", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "f32, f16 or bf16", DefaultValueFactory = _ => "bf16" };
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 0 };
        var cmd = new Command("synth", "write a random-weight checkpoint of a real model's shape (for speed work)") { preset, output, dtype, seed };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var config = ModelPresets.Get(r.GetValue(preset)!);
            var type = ParseType(r.GetValue(dtype)!);
            ConsoleProgress? progress = null;
            RandomCheckpoint.Write(r.GetValue(output)!, config, type, r.GetValue(seed),
                (done, total) => (progress ??= new ConsoleProgress("tensors written", total)).Report(done));
            Console.WriteLine($"wrote {r.GetValue(output)}: {r.GetValue(preset)} shape, {config.ParameterCount / 1e6:F1}M parameters, {type}, random weights");
            return 0;
        }));
        return cmd;
    }

    public static WeightType ParseType(string s) => s.ToLowerInvariant() switch
    {
        "f32" or "fp32" or "float32" => WeightType.F32,
        "f16" or "fp16" or "float16" => WeightType.F16,
        "bf16" or "bfloat16" => WeightType.BF16,
        _ => throw new ArgumentException($"--dtype must be f32, f16 or bf16, got '{s}'"),
    };
}
