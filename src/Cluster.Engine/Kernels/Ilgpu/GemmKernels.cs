using ILGPU;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Shape of y[M, N] = x[M, K] · w[N, K]^T, x starting at element XOffset.</summary>
internal readonly record struct GemmShape(int M, int K, int N, long XOffset);

/// <summary>
/// ILGPU's own matrix product: the CPU-accelerator path (what CI checks) and the fallback on a GPU
/// without cuBLAS. Classic shared-memory tiling: each group of tile x tile threads computes one
/// output tile, staging tile-wide slices of x and w through shared memory (Kirk and Hwu, ch. 5).
/// </summary>
internal static class GemmKernels
{
    /// <summary>Launch with groups (tile, tile), grid (ceil(N/tile), ceil(M/tile)) and 2 * tile^2
    /// floats of dynamic shared memory. The tile is a launch choice, not a constant: 16 on a GPU, 4 on
    /// ILGPU's CPU accelerator (whose default device allows 16 threads per group).</summary>
    public static void MatMulTransposed<TW>(ArrayView<float> x, TW w, ArrayView<float> y, GemmShape s)
        where TW : struct, IWeightView
    {
        int tile = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var xs = shared.SubView(0, tile * tile);
        var ws = shared.SubView(tile * tile, tile * tile);
        int tx = Group.IdxX, ty = Group.IdxY;
        int col = Grid.IdxX * tile + tx;   // output column n
        int row = Grid.IdxY * tile + ty;   // output row m
        int wRow = Grid.IdxX * tile + ty;  // the w row this thread stages
        float acc = 0;
        for (int k0 = 0; k0 < s.K; k0 += tile)
        {
            int k = k0 + tx;
            xs[ty * tile + tx] = row < s.M && k < s.K ? x[s.XOffset + (long)row * s.K + k] : 0f;
            ws[ty * tile + tx] = wRow < s.N && k < s.K ? w.Load((long)wRow * s.K + k) : 0f;
            Group.Barrier();
            for (int kk = 0; kk < tile; kk++) acc += xs[ty * tile + kk] * ws[tx * tile + kk];
            Group.Barrier();
        }
        if (row < s.M && col < s.N) y[(long)row * s.N + col] = acc;
    }

    /// <summary>One thread per output element, no shared memory or barriers: ILGPU's CPU accelerator
    /// runs a group's threads as OS threads that meet at every barrier, which makes the tiled kernel
    /// slow there; this one is what the CPU accelerator uses by default. Launch over M * N.</summary>
    public static void MatMulSimple<TW>(Index1D idx, ArrayView<float> x, TW w, ArrayView<float> y, GemmShape s)
        where TW : struct, IWeightView
    {
        int row = idx / s.N, col = idx - row * s.N;
        long xo = s.XOffset + (long)row * s.K, wo = (long)col * s.K;
        float acc = 0;
        for (int k = 0; k < s.K; k++) acc += x[xo + k] * w.Load(wo + k);
        y[idx] = acc;
    }
}
