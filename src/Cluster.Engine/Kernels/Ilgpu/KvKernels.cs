using ILGPU;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Where a chunk's keys and values go in a cache layer [kvHeads, capacity, headDim].</summary>
/// <param name="UniformStart">First free slot when every head has the same length, else -1 and the
/// per-head starts are in the kernel's starts view (heads differ after per-head compression).</param>
internal readonly record struct KvAppendShape(int KvHeads, int HeadDim, int Capacity, int RowOffset, int UniformStart);

/// <summary>KV-cache writes on the device: append a chunk, and the gather step of compaction.</summary>
internal static class KvKernels
{
    /// <summary>One thread per (token t, kv head h, d): cache[h, start(h) + t, d] = k[rowOffset + t, h, d].</summary>
    public static void Append(Index1D idx, ArrayView<float> k, ArrayView<float> v, ArrayView<float> cacheK, ArrayView<float> cacheV,
        ArrayView<int> starts, KvAppendShape s)
    {
        int d = idx % s.HeadDim, th = idx / s.HeadDim, h = th % s.KvHeads, t = th / s.KvHeads;
        int slot = (s.UniformStart >= 0 ? s.UniformStart : starts[h]) + t;
        long src = ((long)(s.RowOffset + t) * s.KvHeads + h) * s.HeadDim + d;
        long dst = ((long)h * s.Capacity + slot) * s.HeadDim + d;
        cacheK[dst] = k[src];
        cacheV[dst] = v[src];
    }

    /// <summary>One thread per (kept slot i, d): scratch[i, d] = cache[headOffset + keep[i], d] for K and V.
    /// Gathering into scratch (then copying back) avoids the read/write race of moving in place.</summary>
    public static void Gather(Index1D idx, ArrayView<float> cacheK, ArrayView<float> cacheV, ArrayView<float> outK, ArrayView<float> outV,
        ArrayView<int> keep, long headOffset, int headDim)
    {
        int d = idx % headDim, i = idx / headDim;
        long src = headOffset + (long)keep[i] * headDim + d;
        outK[idx] = cacheK[src];
        outV[idx] = cacheV[src];
    }
}
