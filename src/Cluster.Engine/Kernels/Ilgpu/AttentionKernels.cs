using ILGPU;
using ILGPU.Algorithms;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>One segment's attention problem: Tokens query rows from RowOffset of q [rows, heads, headDim]
/// over a cache layer [kvHeads, Capacity, headDim] whose last Tokens entries per head are the segment's own.</summary>
/// <param name="Stride">Score columns per (token, head) row of the scratch (the longest visible length).</param>
/// <param name="UniformLength">Length of every kv head when equal, else -1 (then read from the lengths view).</param>
internal readonly record struct AttentionShape(
    int Heads, int HeadDim, int Group, int Tokens, int RowOffset, int Capacity, int Stride, int UniformLength, float Scale);

/// <summary>
/// Causal grouped-query attention in three passes over a scores scratch [Tokens, heads, Stride]:
/// scores = q·k * scale, a row softmax (max-shifted, as CpuBackend), then output = softmax · V.
/// Plain and exact rather than fused; FlashAttention-style tiling (Dao et al. 2022) is the next step.
/// </summary>
internal static class AttentionKernels
{
    private static int Visible(ArrayView<int> lengths, AttentionShape s, int t, int g) =>
        (s.UniformLength >= 0 ? s.UniformLength : lengths[g]) - s.Tokens + t + 1;

    /// <summary>One thread per (t, h, j) for j &lt; Stride; slots past the causal limit are left alone.</summary>
    public static void Scores(Index1D idx, ArrayView<float> q, ArrayView<float> keys, ArrayView<int> lengths, ArrayView<float> scores, AttentionShape s)
    {
        int j = idx % s.Stride, th = idx / s.Stride, h = th % s.Heads, t = th / s.Heads, g = h / s.Group;
        if (j >= Visible(lengths, s, t, g)) return;
        long qo = ((long)(s.RowOffset + t) * s.Heads + h) * s.HeadDim;
        long ko = ((long)g * s.Capacity + j) * s.HeadDim;
        float dot = 0;
        for (int d = 0; d < s.HeadDim; d++) dot += q[qo + d] * keys[ko + d];
        scores[idx] = dot * s.Scale;
    }

    /// <summary>One group per (t, h) row (power-of-two size, that many floats of dynamic shared memory):
    /// p = exp(s - max) / sum over the visible slots.</summary>
    public static void Softmax(ArrayView<int> lengths, ArrayView<float> scores, AttentionShape s)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int th = Grid.IdxX, tid = Group.IdxX, size = Group.DimX, h = th % s.Heads, t = th / s.Heads;
        int n = Visible(lengths, s, t, h / s.Group);
        long row = (long)th * s.Stride;
        float max = float.NegativeInfinity;
        for (int j = tid; j < n; j += size) max = XMath.Max(max, scores[row + j]);
        shared[tid] = max;
        Group.Barrier();
        for (int k = size / 2; k > 0; k >>= 1)
        {
            if (tid < k) shared[tid] = XMath.Max(shared[tid], shared[tid + k]);
            Group.Barrier();
        }
        max = shared[0];
        Group.Barrier();
        float sum = 0;
        for (int j = tid; j < n; j += size)
        {
            float e = XMath.Exp(scores[row + j] - max);
            scores[row + j] = e;
            sum += e;
        }
        shared[tid] = sum;
        Group.Barrier();
        for (int k = size / 2; k > 0; k >>= 1)
        {
            if (tid < k) shared[tid] += shared[tid + k];
            Group.Barrier();
        }
        float inv = 1f / shared[0];
        for (int j = tid; j < n; j += size) scores[row + j] *= inv;
        // Zeros past the causal limit: the cuBLAS path multiplies whole rows by V.
        for (int j = n + tid; j < s.Stride; j += size) scores[row + j] = 0f;
    }

    /// <summary>The softmax with one thread per (t, h) row and no barriers (the CPU accelerator's variant).</summary>
    public static void SoftmaxRow(Index1D th, ArrayView<int> lengths, ArrayView<float> scores, AttentionShape s)
    {
        int h = th % s.Heads, t = th / s.Heads, n = Visible(lengths, s, t, h / s.Group);
        long row = (long)(int)th * s.Stride;
        float max = float.NegativeInfinity, sum = 0;
        for (int j = 0; j < n; j++) max = XMath.Max(max, scores[row + j]);
        for (int j = 0; j < n; j++)
        {
            float e = XMath.Exp(scores[row + j] - max);
            scores[row + j] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int j = 0; j < n; j++) scores[row + j] *= inv;
        for (int j = n; j < s.Stride; j++) scores[row + j] = 0f;
    }

    /// <summary>One thread per (h, j, d) for j &lt; Stride: kx[h, j, d] = keys[h / Group, j, d], and the same
    /// for values, zero past the kv head's length: every query head gets its own copy of its group's
    /// K and V so that one strided-batched product covers all heads.</summary>
    public static void ExpandKv(Index1D idx, ArrayView<float> keys, ArrayView<float> values, ArrayView<int> lengths,
        ArrayView<float> kx, ArrayView<float> vx, AttentionShape s)
    {
        int d = idx % s.HeadDim, hj = idx / s.HeadDim, j = hj % s.Stride, h = hj / s.Stride, g = h / s.Group;
        bool live = j < (s.UniformLength >= 0 ? s.UniformLength : lengths[g]);
        long src = ((long)g * s.Capacity + j) * s.HeadDim + d;
        kx[idx] = live ? keys[src] : 0f;
        vx[idx] = live ? values[src] : 0f;
    }

    /// <summary>
    /// The three passes in one launch for short segments (decode steps): one group per (t, h) row,
    /// a power-of-two group of at least HeadDim threads and as many floats of dynamic shared memory.
    /// Threads take keys j = tid, tid + size, ... for the scores (kept unnormalized as exp(s - max) in
    /// the scratch row), then size / HeadDim slices of the keys for the weighted sum of V, which the
    /// first HeadDim threads add up and divide by the row's sum. One launch instead of three, and the
    /// V pass spreads a long row over the whole group rather than one thread per output element.
    /// </summary>
    public static void Fused(ArrayView<float> q, ArrayView<float> keys, ArrayView<float> values, ArrayView<int> lengths,
        ArrayView<float> scores, ArrayView<float> output, AttentionShape s)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int th = Grid.IdxX, tid = Group.IdxX, size = Group.DimX, h = th % s.Heads, t = th / s.Heads, g = h / s.Group, hd = s.HeadDim;
        int n = Visible(lengths, s, t, g);
        long qo = ((long)(s.RowOffset + t) * s.Heads + h) * hd, kv = (long)g * s.Capacity * hd, row = (long)th * s.Stride;
        float max = float.NegativeInfinity;
        for (int j = tid; j < n; j += size)
        {
            long ko = kv + (long)j * hd;
            float dot = 0;
            for (int d = 0; d < hd; d++) dot += q[qo + d] * keys[ko + d];
            dot *= s.Scale;
            scores[row + j] = dot;
            max = XMath.Max(max, dot);
        }
        max = GroupReduce(shared, tid, size, max, isMax: true);
        float sum = 0;
        for (int j = tid; j < n; j += size)
        {
            float e = XMath.Exp(scores[row + j] - max);
            scores[row + j] = e;
            sum += e;
        }
        // The reduction's barriers also make every thread's exp(s - max) visible to the V pass.
        sum = GroupReduce(shared, tid, size, sum, isMax: false);
        int slices = size / hd, slice = tid / hd, d0 = tid % hd;
        float acc = 0;
        if (slice < slices)
            for (int j = slice; j < n; j += slices) acc += scores[row + j] * values[kv + (long)j * hd + d0];
        shared[tid] = acc;
        Group.Barrier();
        if (tid < hd)
        {
            float total = 0;
            for (int k = 0; k < slices; k++) total += shared[k * hd + tid];
            output[qo + tid] = total / sum;
        }
    }

    /// <summary>Max or sum of one value per thread over the group (a tree in shared memory); every
    /// thread gets the result, and the shared memory is free again on return.</summary>
    private static float GroupReduce(ArrayView<float> shared, int tid, int size, float value, bool isMax)
    {
        shared[tid] = value;
        Group.Barrier();
        for (int k = size / 2; k > 0; k >>= 1)
        {
            if (tid < k) shared[tid] = isMax ? XMath.Max(shared[tid], shared[tid + k]) : shared[tid] + shared[tid + k];
            Group.Barrier();
        }
        float result = shared[0];
        Group.Barrier();
        return result;
    }

    /// <summary>One thread per (t, h, d): out[row, h, d] = sum_j p[j] * v[g, j, d].</summary>
    public static void Output(Index1D idx, ArrayView<float> scores, ArrayView<float> values, ArrayView<int> lengths, ArrayView<float> output, AttentionShape s)
    {
        int d = idx % s.HeadDim, th = idx / s.HeadDim, h = th % s.Heads, t = th / s.Heads, g = h / s.Group;
        int n = Visible(lengths, s, t, g);
        long row = (long)th * s.Stride, vo = (long)g * s.Capacity * s.HeadDim + d;
        float acc = 0;
        for (int j = 0; j < n; j++) acc += scores[row + j] * values[vo + (long)j * s.HeadDim];
        output[((long)(s.RowOffset + t) * s.Heads + h) * s.HeadDim + d] = acc;
    }
}
