using Cluster.Engine.Compression;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;

namespace Cluster.Engine.Tests.Compression;

/// <summary>Shared helpers: every registered policy at a given budget, and token-by-token streaming.</summary>
internal static class PolicyFixtures
{
    /// <summary>One spec per registered policy with total budget <paramref name="budget"/>.</summary>
    public static IEnumerable<string> EverySpec(int budget) =>
        KvPolicyRegistry.Names.Select(name => name switch
        {
            "dense" => "dense",
            "window" => $"window({budget})",
            "sink_window" => $"sink_window(4,{budget - 4})",
            "qfilters" => $"qfilters({budget},{budget / 4})",
            "knorm" => $"knorm({budget},{budget / 4})",
            "rerotate" => $"rerotate(knorm({budget},{budget / 4}))",
            _ => throw new InvalidOperationException($"add policy '{name}' to PolicyFixtures.EverySpec"),
        });

    /// <summary>The synthetic GQA model (TestModels.WriteSynthetic), written once into <paramref name="dir"/>.</summary>
    public static LlamaModel Synthetic(TempDir dir)
    {
        var folder = dir.File("tiny");
        if (!Directory.Exists(folder)) TestModels.WriteSynthetic(folder);
        return TestModels.Load(folder);
    }

    /// <summary><paramref name="count"/> token ids in the synthetic model's vocabulary, from <paramref name="seed"/>.</summary>
    public static int[] RandomIds(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Next(3, 259)).ToArray();
    }

    /// <summary>Random unit filters (the tests only need some direction per head).</summary>
    public static QFilters RandomFilters(LlamaConfig c, int seed = 11)
    {
        var rng = new Random(seed);
        var data = new float[c.Layers * c.KvHeads * c.HeadDim];
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
        return new QFilters(c.Layers, c.KvHeads, c.HeadDim, data);
    }

    public static KvCompressionPolicy Parse(string spec, LlamaConfig c) =>
        KvPolicyRegistry.Parse(spec, new PolicyOptions(RandomFilters(c), AllowExtrapolation: true));

    /// <summary>Feeds <paramref name="ids"/> one token at a time; returns the logits of every step [T, vocab].</summary>
    public static float[] Stream(LlamaModel model, int[] ids, SequenceKvCache cache)
    {
        int vocab = model.Config.VocabSize;
        var all = new float[ids.Length * vocab];
        for (int t = 0; t < ids.Length; t++) KvRoom.Forward(model, [ids[t]], cache, all.AsSpan(t * vocab, vocab));
        return all;
    }

    /// <summary>A layer's cached K or V of one head as host floats [length, headDim], in original token
    /// order (window policies' fast eviction keeps slots in ring order; attention does not care).</summary>
    public static float[] HeadRows(LlamaModel model, KvCacheLayer layer, int head, bool keys)
    {
        int n = layer.Lengths[head], hd = layer.HeadDim;
        var rows = new float[n * hd];
        model.Backend.CopyToHost(keys ? layer.K : layer.V, layer.Offset(head, 0), rows);
        var order = SlotOrder(layer, head);
        var sorted = new float[rows.Length];
        for (int i = 0; i < n; i++) rows.AsSpan(order[i] * hd, hd).CopyTo(sorted.AsSpan(i * hd, hd));
        return sorted;
    }

    /// <summary>The original positions of one head's tokens, ascending.</summary>
    public static int[] HeadPositions(KvCacheLayer layer, int head) => SlotPositions(layer, head).Order().ToArray();

    /// <summary>The original positions of one head's slots, in slot order.</summary>
    public static int[] SlotPositions(KvCacheLayer layer, int head) =>
        layer.Positions.AsSpan(head * layer.Capacity, layer.Lengths[head]).ToArray();

    /// <summary>Slots of one head, oldest token first.</summary>
    private static int[] SlotOrder(KvCacheLayer layer, int head)
    {
        var positions = SlotPositions(layer, head);
        return Enumerable.Range(0, positions.Length).OrderBy(i => positions[i]).ToArray();
    }
}
