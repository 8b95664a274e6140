using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;
using Cluster.Engine.Tokenizers;

namespace LlmCtl;

/// <summary>Resolves the --model / --tokenizer options shared by the commands.</summary>
internal static class ModelSource
{
    /// <summary>The model path given, or the embedded default (said so, since its output is noise).</summary>
    public static string ResolvePath(string? model)
    {
        if (!string.IsNullOrEmpty(model)) return model;
        var folder = DefaultModel.EnsurePath();
        Console.Error.WriteLine($"note: no --model given: using a random-weight '{DefaultModel.Preset}' model generated at {folder} (its output is noise; pass --model for real text)");
        return folder;
    }

    public static LlamaModel Load(string path, int? threads, string? weights = null) =>
        ModelLoader.Load(path, new CpuBackend(threads), weights: WeightLayout.ParseOption(weights));

    /// <summary>The --weights option: the format the model's matrices are kept in.</summary>
    public static System.CommandLine.Option<string?> WeightsOption() => new("--weights")
    {
        Description = "weight format in memory: q8_0, bf16, fp16 or fp32 (default: as stored; converted once at load)",
    };

    /// <summary>Loads onto the backend made first (so that a missing device is reported before any
    /// file is read), in the weight format asked for; the model owns the backend from then on.</summary>
    public static LlamaModel Load(string path, Func<IComputeBackend> backend, int maxChunk = 256, string? weights = null)
    {
        var b = backend();
        try
        {
            return ModelLoader.Load(path, b, maxChunk, WeightLayout.ParseOption(weights));
        }
        catch
        {
            b.Dispose();
            throw;
        }
    }
}
