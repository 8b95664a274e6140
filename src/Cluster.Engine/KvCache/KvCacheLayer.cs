using Cluster.Engine.Kernels;

namespace Cluster.Engine.KvCache;

/// <summary>
/// Keys and values of one layer of one sequence, stored per KV head so that a compression policy may
/// keep different tokens in different heads (DESIGN.md, "KV cache and compression contract").
/// K and V are backend tensors laid out [kvHeads, capacity, headDim]; keys are stored after RoPE.
/// <see cref="Positions"/> holds the original position of every kept token, [kvHeads, capacity].
/// </summary>
public sealed class KvCacheLayer : IDisposable
{
    public KvCacheLayer(IComputeBackend backend, int kvHeads, int headDim, int capacity)
    {
        KvHeads = kvHeads;
        HeadDim = headDim;
        Capacity = capacity;
        K = backend.Allocate((long)kvHeads * capacity * headDim);
        V = backend.Allocate((long)kvHeads * capacity * headDim);
        Positions = new int[kvHeads * capacity];
        Lengths = new int[kvHeads];
        OldestSlotHint = new int[kvHeads];
    }

    public int KvHeads { get; }
    public int HeadDim { get; }
    public int Capacity { get; private set; }
    public Tensor K { get; private set; }
    public Tensor V { get; private set; }

    /// <summary>Original token position of each slot, [kvHeads, capacity].</summary>
    public int[] Positions { get; private set; }

    /// <summary>Number of filled slots of each KV head.</summary>
    public int[] Lengths { get; }

    /// <summary>Per head, the slot where the window policies' fast eviction expects the oldest window
    /// token next (a hint only: it is checked against <see cref="Positions"/> before use, so a restore,
    /// copy or other policy that moves slots costs one scan, never a wrong eviction).</summary>
    internal int[] OldestSlotHint { get; }

    /// <summary>Counts changes to rows already held: compaction, slot moves, re-rotation, restore, truncation,
    /// rounding, a copy over this layer. Appending rows does not count, so a digest taken of the layer at one
    /// revision still describes its first rows while the revision is the same: a checkpoint then reads and
    /// hashes only the rows appended since (<c>KvDelta.Diff</c>), not the whole cache. Whatever rewrites a held
    /// row must call <see cref="Rewritten"/>.</summary>
    public long Revision { get; private set; }

    internal void Rewritten() => Revision++;

    /// <summary>Offset (in floats) of slot <paramref name="slot"/> of head <paramref name="head"/> in K or V.</summary>
    public long Offset(int head, int slot) => ((long)head * Capacity + slot) * HeadDim;

    /// <summary>Grows the per-head capacity to at least <paramref name="capacity"/>, keeping contents.</summary>
    internal void Grow(IComputeBackend backend, int capacity)
    {
        if (capacity > Capacity) Resize(backend, capacity);
    }

    /// <summary>Sets the per-head capacity to exactly <paramref name="capacity"/> (at least every head's
    /// length), keeping contents: a paged sequence's cache is exactly the blocks the pool granted it.</summary>
    internal void Resize(IComputeBackend backend, int capacity)
    {
        if (capacity == Capacity) return;
        if (capacity < Lengths.Max()) throw new ArgumentOutOfRangeException(nameof(capacity), $"{capacity} slots cannot hold the {Lengths.Max()} a head holds");
        var k = backend.Allocate((long)KvHeads * capacity * HeadDim);
        var v = backend.Allocate((long)KvHeads * capacity * HeadDim);
        var positions = new int[KvHeads * capacity];
        int keep = Math.Min(Capacity, capacity);
        // Pooled: a paged cache is resized every block's worth of tokens, and these would be garbage.
        var rented = System.Buffers.ArrayPool<float>.Shared.Rent(keep * HeadDim);
        var row = rented.AsSpan(0, keep * HeadDim);
        for (int h = 0; h < KvHeads; h++)
        {
            backend.CopyToHost(K, Offset(h, 0), row);
            backend.CopyFromHost(row, k, (long)h * capacity * HeadDim);
            backend.CopyToHost(V, Offset(h, 0), row);
            backend.CopyFromHost(row, v, (long)h * capacity * HeadDim);
            Array.Copy(Positions, h * Capacity, positions, h * capacity, Lengths[h]);
        }
        System.Buffers.ArrayPool<float>.Shared.Return(rented);
        K.Dispose();
        V.Dispose();
        (K, V, Positions, Capacity) = (k, v, positions, capacity);
    }

    /// <summary>Copies this layer's contents into <paramref name="target"/> (same shape, capacity at least ours).</summary>
    internal void CopyTo(IComputeBackend backend, KvCacheLayer target)
    {
        target.Grow(backend, Capacity);
        target.Rewritten();
        var row = new float[Capacity * HeadDim];
        for (int h = 0; h < KvHeads; h++)
        {
            var n = Lengths[h] * HeadDim;
            backend.CopyToHost(K, Offset(h, 0), row.AsSpan(0, n));
            backend.CopyFromHost(row.AsSpan(0, n), target.K, target.Offset(h, 0));
            backend.CopyToHost(V, Offset(h, 0), row.AsSpan(0, n));
            backend.CopyFromHost(row.AsSpan(0, n), target.V, target.Offset(h, 0));
            Array.Copy(Positions, h * Capacity, target.Positions, h * target.Capacity, Lengths[h]);
            target.Lengths[h] = Lengths[h];
        }
    }

    public void Dispose()
    {
        K.Dispose();
        V.Dispose();
    }
}
