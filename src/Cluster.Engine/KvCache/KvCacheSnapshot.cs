using Cluster.Engine.Kernels;

namespace Cluster.Engine.KvCache;

/// <summary>
/// One layer of a sequence's KV cache copied to the host, the unit the cluster moves between
/// workers and the cache manager (DESIGN.md: "a block is the K and V of one layer for a run of
/// tokens of one sequence, per KV head, with the original position of every kept token").
/// <see cref="Keys"/> and <see cref="Values"/> hold head after head, each [Positions[h].Length, headDim].
/// </summary>
public sealed record KvLayerBlock(int Layer, int[][] Positions, float[] Keys, float[] Values)
{
    public int Tokens => Positions.Sum(p => p.Length);

    /// <summary>Bytes of K and V together (fp32).</summary>
    public long DataBytes => ((long)Keys.Length + Values.Length) * sizeof(float);
}

/// <summary>Copies caches to and from <see cref="KvLayerBlock"/>s.</summary>
public static class KvCacheSnapshot
{
    /// <summary>Copies layer <paramref name="layer"/> of <paramref name="cache"/> to the host.</summary>
    public static KvLayerBlock Capture(IComputeBackend backend, SequenceKvCache cache, int layer)
    {
        var l = cache.Layers[layer];
        int hd = l.HeadDim, total = l.Lengths.Sum();
        var keys = new float[(long)total * hd];
        var values = new float[(long)total * hd];
        var positions = new int[l.KvHeads][];
        int offset = 0;
        for (int h = 0; h < l.KvHeads; h++)
        {
            int n = l.Lengths[h];
            positions[h] = l.Positions.AsSpan(h * l.Capacity, n).ToArray();
            backend.CopyToHost(l.K, l.Offset(h, 0), keys.AsSpan(offset, n * hd));
            backend.CopyToHost(l.V, l.Offset(h, 0), values.AsSpan(offset, n * hd));
            InOriginalOrder(positions[h], keys.AsSpan(offset, n * hd), values.AsSpan(offset, n * hd), hd);
            offset += n * hd;
        }
        return new KvLayerBlock(layer, positions, keys, values);
    }

    /// <summary>A window policy's fast path leaves slots in ring order (attention does not care); a block
    /// lists tokens in original order, as every consumer of blocks expects. Already ordered: no work.</summary>
    public static void InOriginalOrder(int[] positions, Span<float> keys, Span<float> values, int hd)
    {
        int n = positions.Length;
        bool ordered = true;
        for (int i = 1; i < n && ordered; i++) ordered = positions[i - 1] < positions[i];
        if (ordered) return;
        var order = Enumerable.Range(0, n).ToArray();
        Array.Sort((int[])positions.Clone(), order);
        var k = keys.ToArray();
        var v = values.ToArray();
        for (int i = 0; i < n; i++)
        {
            k.AsSpan(order[i] * hd, hd).CopyTo(keys.Slice(i * hd, hd));
            v.AsSpan(order[i] * hd, hd).CopyTo(values.Slice(i * hd, hd));
        }
        Array.Sort(positions);
    }

    /// <summary>Replaces the contents of one layer of <paramref name="cache"/> with <paramref name="block"/>;
    /// throws <see cref="ArgumentException"/> when the block does not fit the cache's shape.</summary>
    public static void Restore(IComputeBackend backend, SequenceKvCache cache, KvLayerBlock block)
    {
        if ((uint)block.Layer >= cache.Layers.Length) throw new ArgumentException($"block for layer {block.Layer}, but the cache has {cache.Layers.Length} layers");
        var l = cache.Layers[block.Layer];
        int hd = l.HeadDim;
        if (block.Positions.Length != l.KvHeads) throw new ArgumentException($"layer {block.Layer}: block has {block.Positions.Length} KV heads, the model {l.KvHeads}");
        long expected = (long)block.Tokens * hd;
        if (block.Keys.Length != expected || block.Values.Length != expected)
            throw new ArgumentException($"layer {block.Layer}: {block.Tokens} tokens x head_dim {hd} need {expected} floats each for K and V, got {block.Keys.Length} and {block.Values.Length}");
        int most = block.Positions.Max(p => p.Length);
        if (most > l.Capacity) l.Grow(backend, most);
        l.Rewritten();
        int offset = 0;
        for (int h = 0; h < l.KvHeads; h++)
        {
            int n = block.Positions[h].Length;
            backend.CopyFromHost(block.Keys.AsSpan(offset, n * hd), l.K, l.Offset(h, 0));
            backend.CopyFromHost(block.Values.AsSpan(offset, n * hd), l.V, l.Offset(h, 0));
            block.Positions[h].CopyTo(l.Positions, h * l.Capacity);
            l.Lengths[h] = n;
            offset += n * hd;
        }
    }

    /// <summary>Sets how many tokens the restored sequence has seen (the next token's original position).</summary>
    public static void SetTokensSeen(SequenceKvCache cache, int tokensSeen)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokensSeen);
        cache.TokensSeen = tokensSeen;
    }
}
