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

    /// <summary>The tokenizer named by --tokenizer, else one found beside the model: tokenizer.bin in
    /// a model folder, or tokenizer.bin / tok{vocab}.bin next to a llama2.c file.</summary>
    public static ITokenizer LoadTokenizer(string modelPath, string? tokenizerPath, LlamaConfig config)
    {
        var path = tokenizerPath ?? FindTokenizer(modelPath, config)
            ?? throw new FileNotFoundException($"no tokenizer found beside {modelPath}; pass --tokenizer PATH");
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer {path} not found");
        return Llama2cTokenizer.Load(path, config.VocabSize);
    }

    private static string? FindTokenizer(string modelPath, LlamaConfig config)
    {
        var folder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        return new[] { "tokenizer.bin", $"tok{config.VocabSize}.bin" }.Select(n => Path.Combine(folder, n)).FirstOrDefault(File.Exists);
    }
}
