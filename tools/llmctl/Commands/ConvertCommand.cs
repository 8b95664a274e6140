using System.CommandLine;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;

namespace LlmCtl.Commands;

/// <summary>`llmctl convert`: llama2.c checkpoint -> Hugging Face folder (config.json + model.safetensors).</summary>
internal static class ConvertCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "llama2.c checkpoint (.bin, legacy or version 1)", Required = true };
        var output = new Option<string>("--out") { Description = "output folder", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "f32, f16 or bf16", DefaultValueFactory = _ => "f32" };
        var cmd = new Command("convert", "convert a llama2.c checkpoint to a Hugging Face folder") { model, output, dtype };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var type = SynthCommand.ParseType(r.GetValue(dtype)!);
            var path = r.GetValue(model)!;
            var outDir = r.GetValue(output)!;
            using var ckpt = Llama2cCheckpoint.Open(path);
            ConsoleProgress? progress = null;
            HuggingFaceWriter.Write(outDir, ckpt.Config, ckpt, type,
                (done, total) => (progress ??= new ConsoleProgress("tensors written", total)).Report(done));
            // The tokenizer travels along: the folder loader finds tokenizer.bin.
            var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            var tok = new[] { "tokenizer.bin", $"tok{ckpt.Config.VocabSize}.bin" }.Select(n => Path.Combine(dir, n)).FirstOrDefault(File.Exists);
            if (tok is not null) File.Copy(tok, Path.Combine(outDir, "tokenizer.bin"), overwrite: true);
            Console.WriteLine($"wrote {outDir} (llama2.c version {ckpt.Version} -> Hugging Face, {type}{(tok is null ? ", no tokenizer found beside the checkpoint" : ", tokenizer.bin copied")})");
            return 0;
        }));
        return cmd;
    }
}
