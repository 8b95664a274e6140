using Cluster.Engine.Kernels;
using Cluster.Engine.Model;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Loaders;

/// <summary>Opens a checkpoint by what the path is: a Hugging Face folder, a GGUF file or a llama2.c file.</summary>
public static class ModelLoader
{
    /// <summary>Reads only the configuration (cheap: no weights are touched).</summary>
    public static LlamaConfig ReadConfig(string path)
    {
        using var reader = OpenReader(path, out var config);
        return config;
    }

    /// <summary>Loads the model onto <paramref name="backend"/> (default: the CPU backend), its
    /// matrices in <paramref name="weights"/> (null: as stored; see <see cref="LlamaWeights.Load"/>).</summary>
    public static LlamaModel Load(string path, IComputeBackend? backend = null, int maxChunk = 256, WeightType? weights = null)
    {
        var reader = OpenReader(path, out var config);
        try
        {
            backend ??= new CpuBackend();
            var loaded = LlamaWeights.Load(config, reader, backend, weights);
            reader.DropResidentPages(); // what was converted is no longer needed in memory
            return new LlamaModel(config, loaded, backend, reader, maxChunk);
        }
        catch
        {
            reader.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The tokenizer named by <paramref name="tokenizerPath"/>, else the one that belongs to the model:
    /// what its folder holds (tokenizer.json, tokenizer.model, tokenizer.bin, ...), or tokenizer.bin /
    /// tok{vocab}.bin beside a llama2.c file. Throws when none is found or its vocabulary is larger
    /// than the model's.
    /// </summary>
    public static ITokenizer LoadTokenizer(string modelPath, LlamaConfig config, string? tokenizerPath = null)
    {
        if (Directory.Exists(modelPath) && Llama2cFileIn(modelPath) is { } file) modelPath = file;
        if (tokenizerPath is null && File.Exists(modelPath) && GgufCheckpoint.IsGguf(modelPath)) tokenizerPath = modelPath; // vocabulary in the same file
        string path = tokenizerPath ?? (Directory.Exists(modelPath)
            ? modelPath
            : new[] { "tokenizer.bin", $"tok{config.VocabSize}.bin" }
                .Select(n => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, n))
                .FirstOrDefault(File.Exists) ?? throw new FileNotFoundException($"no tokenizer.bin or tok{config.VocabSize}.bin beside {modelPath}; pass a tokenizer path"));
        var tokenizer = TokenizerLoader.Load(path, config.VocabSize);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new ModelFormatException(path, $"tokenizer has {tokenizer.VocabSize} tokens but the model's vocabulary is {config.VocabSize}");
        return tokenizer;
    }

    /// <summary>
    /// The llama2.c checkpoint of a folder without config.json that holds one (e.g. stories260K/ with
    /// stories260K.bin and its tok512.bin): the one .bin that is not a tokenizer (tokenizer.bin, tok*.bin).
    /// </summary>
    public static string? Llama2cFileIn(string folder)
    {
        if (File.Exists(Path.Combine(folder, "config.json"))) return null;
        var checkpoints = Directory.EnumerateFiles(folder, "*.bin")
            .Where(f => Path.GetFileName(f) is var n && n != "tokenizer.bin" && !(n.StartsWith("tok", StringComparison.Ordinal) && n[3..^4].All(char.IsAsciiDigit)))
            .ToList();
        return checkpoints.Count switch
        {
            1 => checkpoints[0],
            0 => null,
            _ => throw new ModelFormatException(folder, $"holds several llama2.c checkpoints ({string.Join(", ", checkpoints.Select(Path.GetFileName))}): pass one of them"),
        };
    }

    private static ICheckpointReader OpenReader(string path, out LlamaConfig config)
    {
        if (Directory.Exists(path) && Llama2cFileIn(path) is { } file) return OpenReader(file, out config);
        if (Directory.Exists(path))
        {
            var hf = HuggingFaceCheckpoint.Open(path);
            config = hf.Config;
            return hf;
        }
        if (File.Exists(path))
        {
            if (Path.GetFileName(path) == "config.json") return OpenReader(Path.GetDirectoryName(Path.GetFullPath(path))!, out config);
            if (GgufCheckpoint.IsGguf(path))
            {
                var gguf = GgufCheckpoint.Open(path);
                config = gguf.Config;
                return gguf;
            }
            var l2c = Llama2cCheckpoint.Open(path);
            config = l2c.Config;
            return l2c;
        }
        throw new ModelFormatException(path, "not found (expected a llama2.c .bin file, a GGUF file or a Hugging Face model folder)");
    }
}
