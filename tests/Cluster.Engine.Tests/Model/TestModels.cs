using Cluster.Engine.KvCache;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;
using Cluster.Engine.Tokenizers;
using Cluster.Tests;

namespace Cluster.Engine.Tests.Model;

/// <summary>Paths and helpers for the models the engine tests run.</summary>
internal static class TestModels
{
    public static string Stories260K => SharedData.Path_("models", "stories260K", "stories260K.bin");
    public static string Tok512 => SharedData.Path_("models", "stories260K", "tok512.bin");

    public static ITokenizer Stories260KTokenizer() => Llama2cTokenizer.Load(Tok512, 512);

    /// <summary>The first <paramref name="count"/> tokens of TinyStories validation text (BOS first).</summary>
    public static int[] TinyStoriesIds(int count)
    {
        var text = File.ReadAllText(SharedData.Path_("corpus", "tinystories_valid_head.txt"));
        var ids = Stories260KTokenizer().Encode(text[..Math.Min(text.Length, count * 8)], addBos: true);
        if (ids.Length < count) throw new InvalidOperationException($"only {ids.Length} tokens in the text prefix");
        return ids[..count];
    }

    /// <summary>A random-weight Hugging Face checkpoint of the "tiny" preset: GQA 8/2, untied head,
    /// rope_theta 500000 and Llama 3 RoPE scaling.</summary>
    public static void WriteSynthetic(string folder, WeightType type = WeightType.F32) =>
        RandomCheckpoint.Write(folder, ModelPresets.Get("tiny"), type, seed: 7);

    /// <summary>Logits [T, vocab] of the whole sequence from one prefill.</summary>
    public static float[] PrefillLogits(LlamaModel model, int[] ids)
    {
        var logits = new float[ids.Length * model.Config.VocabSize];
        using var cache = model.CreateCache(ids.Length);
        KvRoom.Forward(model, ids, cache, logits, allLogits: true);
        return logits;
    }

    public static LlamaModel Load(string path, bool openBlas = true) => ModelLoader.Load(path, new CpuBackend(useOpenBlas: openBlas));

    public static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} vs {b.Length}");
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }
}
