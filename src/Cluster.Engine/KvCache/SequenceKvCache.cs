using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;

namespace Cluster.Engine.KvCache;

/// <summary>
/// The KV cache of one sequence: one <see cref="KvCacheLayer"/> per transformer layer, plus the
/// number of tokens the sequence has seen (the next token's original position), managed by one
/// compression policy (dense when nothing else is asked for). <see cref="KvRoom"/> makes room before
/// tokens run (the policy evicts, the cache grows by doubling, unless its owner sizes it with
/// <see cref="Resize"/>: a paged sequence holds exactly its pool blocks); the model only checks
/// <see cref="HasRoom"/>.
/// </summary>
public sealed class SequenceKvCache : IDisposable
{
    private readonly IComputeBackend _backend;

    public SequenceKvCache(IComputeBackend backend, int layers, int kvHeads, int headDim, int initialCapacity, KvCompressionPolicy policy)
    {
        _backend = backend;
        _policy = policy ?? throw new ArgumentNullException(nameof(policy));
        Layers = new KvCacheLayer[layers];
        for (int l = 0; l < layers; l++) Layers[l] = new KvCacheLayer(backend, kvHeads, headDim, Math.Max(1, initialCapacity));
    }

    public KvCacheLayer[] Layers { get; }

    private KvCompressionPolicy _policy;

    /// <summary>The compression policy <see cref="KvRoom"/> applies before tokens run. Settable because a
    /// prompt is often prefilled densely and then handed to a bounded policy (compressed at once, as the
    /// cache manager does on ingest).</summary>
    public KvCompressionPolicy Policy
    {
        get => _policy;
        set => _policy = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>Tokens seen so far: the original position of the next token.</summary>
    public int TokensSeen { get; internal set; }

    /// <summary>Slots in use in layer 0, head 0 (equal to <see cref="TokensSeen"/> until a policy evicts).</summary>
    public int Length => Layers[0].Lengths[0];

    public int Capacity => Layers[0].Capacity;

    /// <summary>True when every head of every layer holds every token seen (slot i is position i): nothing
    /// was evicted, so the cache can be cut back with <see cref="Truncate"/>.</summary>
    public bool EvictedNone => Layers.All(l => l.Lengths.All(n => n == TokensSeen));

    /// <summary>Makes an empty cache start at original position <paramref name="position"/>, e.g. to run a
    /// window of a longer text at the positions it has there.</summary>
    public void StartAt(int position)
    {
        if (Layers.Any(l => l.Lengths.Any(n => n != 0))) throw new InvalidOperationException("StartAt needs an empty cache");
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        TokensSeen = position;
    }

    /// <summary>Makes sure every head of every layer can take <paramref name="extraTokens"/> more, growing by
    /// doubling but never past <paramref name="limit"/> slots when one is given (a policy's budget).</summary>
    public void Reserve(int extraTokens, int? limit = null)
    {
        foreach (var layer in Layers)
        {
            var needed = layer.Lengths.Max() + extraTokens;
            if (needed > layer.Capacity) layer.Grow(_backend, Math.Max(needed, Math.Min(layer.Capacity * 2, limit ?? int.MaxValue)));
        }
    }

    /// <summary>Whether <paramref name="incoming"/> tokens can be appended as they are: every head has the
    /// slots, and a bounded policy's budget allows them (what <see cref="KvRoom.Make"/> ensures). Reads
    /// lengths only, so the model can ask before every pass.</summary>
    public bool HasRoom(int incoming)
    {
        int limit = _policy.Budget ?? int.MaxValue;
        foreach (var layer in Layers)
        {
            int after = layer.Lengths.Max() + incoming;
            if (after > layer.Capacity || after > limit) return false;
        }
        return true;
    }

    /// <summary>Sets every layer's capacity to exactly <paramref name="capacity"/> slots per head (at least
    /// the slots in use): a paged sequence's cache holds exactly its blocks, so the worker's KV memory
    /// follows the block pool instead of growing by doubling past it.</summary>
    public void Resize(int capacity)
    {
        foreach (var layer in Layers) layer.Resize(_backend, capacity);
    }

    /// <summary>The most slots any head of any layer uses.</summary>
    public int MaxLength()
    {
        int most = 0;
        foreach (var layer in Layers)
            foreach (var n in layer.Lengths) most = Math.Max(most, n);
        return most;
    }

    /// <summary>An independent copy, e.g. so that n samples or beams continue one prompt's KV
    /// without recomputing it.</summary>
    public SequenceKvCache Clone(int extraCapacity = 0)
    {
        var layer0 = Layers[0];
        var copy = new SequenceKvCache(_backend, Layers.Length, layer0.KvHeads, layer0.HeadDim, Capacity + extraCapacity, _policy)
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
        {
            for (int h = 0; h < layer.KvHeads; h++)
            {
                if (layer.Lengths[h] != TokensSeen) throw new InvalidOperationException("Truncate needs a dense cache (a policy has evicted tokens)");
                layer.Lengths[h] = tokens;
            }
            layer.Rewritten(); // the positions cut off are appended again, perhaps with other rows
        }
        TokensSeen = tokens;
    }

    private bool _disposed;

    /// <summary>Freed (a preempted sequence's cache is freed by the batch while its owner holds it).</summary>
    public bool IsDisposed => _disposed;

    /// <summary>Frees the layers; a second call does nothing (a preempted sequence's cache is freed by the
    /// batch while its owner still holds it).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var layer in Layers) layer.Dispose();
    }
}
