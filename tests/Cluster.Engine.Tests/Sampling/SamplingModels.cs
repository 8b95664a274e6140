using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;
using Cluster.Engine.Tests.Model;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Random-weight models for the generation tests, written once per test run into the temp folder.</summary>
internal static class SamplingModels
{
    private static readonly Lazy<string> TinyFolder = new(() => Write("tiny", ModelPresets.Get("tiny")));

    /// <summary>A vocabulary of 8 (EOS = 2): small enough to enumerate every continuation of 3 tokens.</summary>
    private static readonly Lazy<string> Vocab8Folder = new(() => Write("vocab8", new LlamaConfig
    {
        Dim = 16, HiddenDim = 32, Layers = 2, Heads = 2, KvHeads = 1, VocabSize = 8, MaxPositions = 64, BosId = 1, EosIds = [2],
    }));

    /// <summary>The "tiny" preset (vocab 259 of bytes, with a tokenizer.bin).</summary>
    public static LlamaModel Tiny() => TestModels.Load(TinyFolder.Value);

    public static string TinyPath => TinyFolder.Value;

    public static LlamaModel Vocab8() => TestModels.Load(Vocab8Folder.Value);

    private static string Write(string name, LlamaConfig config)
    {
        var folder = Path.Combine(Path.GetTempPath(), $"llmcluster-sampling-tests-{name}-{Environment.ProcessId}");
        RandomCheckpoint.Write(folder, config, WeightType.F32, seed: 11);
        return folder;
    }
}
