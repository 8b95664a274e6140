using ILGPU;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// Rotary embedding (Su et al. 2021) on the device. cos/sin come from the host's <c>RopeTable</c>
/// (double angles rounded to float, as CpuBackend uses them), so both backends rotate by the same numbers.
/// </summary>
internal static class RopeKernels
{
    /// <summary>One thread per (token, head, pair i) of v [T, heads, headDim]; reads src, writes dst
    /// (they are the same tensor for the half-split layout, whose pair i is (i, i + half) in both;
    /// for the interleaved layout src is a copy, since pair i reads (2i, 2i+1) and writes (i, i + half)).
    /// Output is always half-split, the KV cache's one layout.</summary>
    public static void Rotate(Index1D idx, ArrayView<float> src, ArrayView<float> dst, ArrayView<float> cos, ArrayView<float> sin,
        int heads, int half, int interleaved)
    {
        int i = idx % half, th = idx / half, t = th / heads;
        long head = (long)th * 2 * half;
        float x0, x1;
        if (interleaved != 0)
        {
            x0 = src[head + 2 * i];
            x1 = src[head + 2 * i + 1];
        }
        else
        {
            x0 = src[head + i];
            x1 = src[head + i + half];
        }
        float c = cos[t * half + i], s = sin[t * half + i];
        dst[head + i] = x0 * c - x1 * s;
        dst[head + i + half] = x0 * s + x1 * c;
    }

    /// <summary>Re-rotates cached keys of one head by per-slot angles, in double as CpuBackend does
    /// (a key in StreamingLLM's window is re-rotated every step, so each step should round once).
    /// One thread per (slot, pair); cos/sin [slots, half] are 1 and 0 where the delta is 0.</summary>
    public static void RotateKeys(Index1D idx, ArrayView<float> keys, long headOffset, ArrayView<double> cos, ArrayView<double> sin, int half)
    {
        int j = idx % half, slot = idx / half;
        long x = headOffset + (long)slot * 2 * half;
        double x0 = keys[x + j], x1 = keys[x + j + half];
        double c = cos[idx], s = sin[idx];
        keys[x + j] = (float)(x0 * c - x1 * s);
        keys[x + j + half] = (float)(x0 * s + x1 * c);
    }
}
