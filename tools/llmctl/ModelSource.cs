using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;
using Cluster.Engine.Tokenizers;

namespace LlmCtl;

/// <summary>Resolves the --model / --tokenizer options shared by the commands.</summary>
internal static class ModelSource
{
    public const string DefaultPreset = "tiny";

    /// <summary>The model path given, or the embedded default: a small random-weight model that is
    /// generated once into the temp folder (and said so, since its output is noise).</summary>
    public static string ResolvePath(string? model)
    {
        if (!string.IsNullOrEmpty(model)) return model;
        var folder = Path.Combine(Path.GetTempPath(), $"llmcluster-default-{DefaultPreset}");
        if (!File.Exists(Path.Combine(folder, "model.safetensors")))
            RandomCheckpoint.Write(folder, ModelPresets.Get(DefaultPreset), WeightType.F32, seed: 0);
        Console.Error.WriteLine($"note: no --model given: using a random-weight '{DefaultPreset}' model generated at {folder} (its output is noise; pass --model for real text)");
        return folder;
    }

    public static LlamaModel Load(string path, int? threads) => ModelLoader.Load(path, new CpuBackend(threads));

    /// <summary>The tokenizer named by --tokenizer, else the one that belongs to the model.</summary>
    public static ITokenizer LoadTokenizer(string modelPath, string? tokenizerPath, LlamaConfig config) =>
        ModelLoader.LoadTokenizer(modelPath, config, tokenizerPath);
}
