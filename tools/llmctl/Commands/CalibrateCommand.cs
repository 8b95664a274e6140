using Cluster.Engine.Loaders;
using System.CommandLine;
using Cluster.Engine.Compression.Calibration;

namespace LlmCtl.Commands;

/// <summary>`llmctl calibrate`: Q-Filters (Godey et al. 2025) for a model from calibration text; see
/// <see cref="QFilterCalibration"/> for the procedure and the sign convention.</summary>
internal static class CalibrateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "llama2.c .bin file or Hugging Face folder" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer file (default: found beside the model)" };
        var text = new Option<string>("--text") { Description = "calibration text file", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write (one tensor q_filters [layers, kv_heads, head_dim])", Required = true };
        var sequences = new Option<int>("--sequences") { Description = "calibration sequences", DefaultValueFactory = _ => 8 };
        var length = new Option<int>("--seq-len") { Description = "tokens per sequence (published: 2048)", DefaultValueFactory = _ => QFilterCalibration.DefaultSequenceLength };
        var samples = new Option<int>("--samples") { Description = "query positions sampled for the SVD (published: 3000)", DefaultValueFactory = _ => QFilterCalibration.DefaultSamples };
        var offset = new Option<int>("--offset-tokens") { Description = "skip this many text tokens first (calibrate on a different part than you evaluate)", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "seed of the position sample", DefaultValueFactory = _ => 0 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var cmd = new Command("calibrate", "calibrate Q-Filters: SVD of sampled post-RoPE queries per head") { model, tokenizer, text, output, sequences, length, samples, offset, seed, threads };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            if (r.GetValue(samples) < 1) throw new ArgumentException($"--samples must be at least 1, got {r.GetValue(samples)}");
            var path = ModelSource.ResolvePath(r.GetValue(model));
            using var m = ModelSource.Load(path, r.GetValue(threads));
            var tok = ModelLoader.LoadTokenizer(path, m.Config, r.GetValue(tokenizer));
            int n = r.GetValue(sequences);
            if (r.GetValue(length) > m.Config.MaxPositions)
                Console.Error.WriteLine($"note: --seq-len {r.GetValue(length)} is past the model's context of {m.Config.MaxPositions}: queries there are extrapolated (pass --seq-len {m.Config.MaxPositions} to stay inside)");
            var seqs = TextSequences.Take(tok, File.ReadAllText(r.GetValue(text)!), r.GetValue(offset), n, r.GetValue(length));
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var filters = QFilterCalibration.Calibrate(m, seqs, r.GetValue(samples), r.GetValue(seed),
                done => Console.Error.Write($"\rcalibrating: {done}/{n} sequences of {r.GetValue(length)} tokens"));
            Console.Error.WriteLine();
            filters.Save(r.GetValue(output)!);
            Console.WriteLine($"wrote q_filters [{filters.Layers}, {filters.KvHeads}, {filters.HeadDim}] to {r.GetValue(output)} " +
                              $"({Math.Min(r.GetValue(samples), n * r.GetValue(length))} sampled positions, {sw.Elapsed.TotalSeconds:F1} s)");
            return 0;
        }));
        return cmd;
    }
}
