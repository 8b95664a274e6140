using Cluster.Engine.Kernels;

namespace Cluster.Engine.KvCache;

/// <summary>
/// The KV cache of one sequence: one <see cref="KvCacheLayer"/> per transformer layer, plus the
/// number of tokens the sequence has seen (the next token's original position). Grows by doubling
/// when a forward pass needs more room than allocated.
/// </summary>
public sealed class SequenceKvCache : IDisposable
{
    private readonly IComputeBackend _backend;

    public SequenceKvCache(IComputeBackend backend, int layers, int kvHeads, int headDim, int initialCapacity)
    {
        _backend = backend;
        Layers = new KvCacheLayer[layers];
        for (int l = 0; l < layers; l++) Layers[l] = new KvCacheLayer(backend, kvHeads, headDim, Math.Max(1, initialCapacity));
    }

    public KvCacheLayer[] Layers { get; }

    /// <summary>Tokens seen so far: the original position of the next token.</summary>
    public int TokensSeen { get; internal set; }

    /// <summary>Slots in use in layer 0, head 0 (equal to <see cref="TokensSeen"/> until a policy evicts).</summary>
    public int Length => Layers[0].Lengths[0];

    public int Capacity => Layers[0].Capacity;

    /// <summary>Makes sure every head of every layer can take <paramref name="extraTokens"/> more.</summary>
    public void Reserve(int extraTokens)
    {
        foreach (var layer in Layers)
        {
            var needed = layer.Lengths.Max() + extraTokens;
            if (needed > layer.Capacity) layer.Grow(_backend, Math.Max(needed, layer.Capacity * 2));
        }
    }

    /// <summary>An independent copy, e.g. so that n samples or beams continue one prompt's KV
    /// without recomputing it.</summary>
    public SequenceKvCache Clone(int extraCapacity = 0)
    {
        var layer0 = Layers[0];
        var copy = new SequenceKvCache(_backend, Layers.Length, layer0.KvHeads, layer0.HeadDim, Capacity + extraCapacity)
        {
            TokensSeen = TokensSeen,
        };
        for (int l = 0; l < Layers.Length; l++) Layers[l].CopyTo(_backend, copy.Layers[l]);
        return copy;
    }

    /// <summary>Forgets every token from original position <paramref name="tokens"/> on (dense caches only:
    /// slot i holds position i), e.g. to re-run generation from step i.</summary>
    public void Truncate(int tokens)
    {
        if (tokens > TokensSeen) throw new ArgumentOutOfRangeException(nameof(tokens), $"cache holds {TokensSeen} tokens, cannot truncate to {tokens}");
        foreach (var layer in Layers)
            for (int h = 0; h < layer.KvHeads; h++)
            {
                if (layer.Lengths[h] != TokensSeen) throw new InvalidOperationException("Truncate needs a dense cache (a policy has evicted tokens)");
                layer.Lengths[h] = tokens;
            }
        TokensSeen = tokens;
    }

    public void Dispose()
    {
        foreach (var layer in Layers) layer.Dispose();
    }
}
