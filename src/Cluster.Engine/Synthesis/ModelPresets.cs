using Cluster.Engine.Model;

namespace Cluster.Engine.Synthesis;

/// <summary>
/// Shapes of real models (from their published config.json files) for random-weight checkpoints:
/// speed does not depend on the weights' values, only on their shapes.
/// </summary>
public static class ModelPresets
{
    public static readonly IReadOnlyDictionary<string, LlamaConfig> All = new Dictionary<string, LlamaConfig>
    {
        // HuggingFaceTB/SmolLM2-135M
        ["smollm2-135m"] = new()
        {
            Dim = 576, HiddenDim = 1536, Layers = 30, Heads = 9, KvHeads = 3, VocabSize = 49152, MaxPositions = 8192,
            RopeTheta = 100000, RmsNormEps = 1e-5f, TiedEmbeddings = true, BosId = 1, EosIds = [2],
        },
        // HuggingFaceTB/SmolLM2-360M
        ["smollm2-360m"] = new()
        {
            Dim = 960, HiddenDim = 2560, Layers = 32, Heads = 15, KvHeads = 5, VocabSize = 49152, MaxPositions = 8192,
            RopeTheta = 100000, RmsNormEps = 1e-5f, TiedEmbeddings = true, BosId = 1, EosIds = [2],
        },
        // meta-llama/Llama-3.2-1B
        ["llama-3.2-1b"] = new()
        {
            Dim = 2048, HiddenDim = 8192, Layers = 16, Heads = 32, KvHeads = 8, HeadDimOverride = 64, VocabSize = 128256,
            MaxPositions = 131072, RopeTheta = 500000, RmsNormEps = 1e-5f, TiedEmbeddings = true, BosId = 128000, EosIds = [128001],
            RopeScaling = new Llama3RopeScaling(32, 1, 4, 8192),
        },
        // TinyLlama/TinyLlama-1.1B-Chat-v1.0
        ["tinyllama-1.1b"] = new()
        {
            Dim = 2048, HiddenDim = 5632, Layers = 22, Heads = 32, KvHeads = 4, VocabSize = 32000, MaxPositions = 2048,
            RopeTheta = 10000, RmsNormEps = 1e-5f, TiedEmbeddings = false, BosId = 1, EosIds = [2],
        },
        // A few-MB model for tests and the embedded default: GQA 8/2, untied head, rope_theta != 10000,
        // Llama 3 RoPE scaling, and a 259-token byte vocabulary (3 specials + 256 bytes).
        ["tiny"] = new()
        {
            Dim = 64, HiddenDim = 160, Layers = 3, Heads = 8, KvHeads = 2, VocabSize = 259, MaxPositions = 1024,
            RopeTheta = 500000, RmsNormEps = 1e-5f, TiedEmbeddings = false, BosId = 1, EosIds = [2],
            RopeScaling = new Llama3RopeScaling(8, 1, 4, 64),
        },
    };

    public static LlamaConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c : throw new ArgumentException($"unknown preset '{name}'; known: {string.Join(", ", All.Keys)}");
}
