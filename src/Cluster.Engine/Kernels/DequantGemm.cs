using System.Numerics.Tensors;

namespace Cluster.Engine.Kernels;

/// <summary>Prefill-sized products of bf16/fp16 weights, through OpenBLAS.</summary>
internal static unsafe class DequantGemm
{
    /// <summary>y[rows, outDim] = x[rows, k] · w^T for bf16/fp16 weights (any row format
    /// <see cref="Dequantize.Row"/> reads): tiles of weight rows are widened to fp32 and multiplied by
    /// single-threaded sgemm, the tiles spread over the threads (see <see cref="RowSplit"/>). Widening
    /// costs one pass over a tile, shared by all rows of x. (Q8_0 has its own int8 GEMM.)</summary>
    public static void Gemm(WeightType type, byte* w, float* x, float* y, int rows, int k, int outDim, int threads)
    {
        // Tiles of ~1 MB of fp32: fit L2 beside the activations, large enough for sgemm's blocking.
        const long tileFloats = 1 << 18;
        long rowBytes = WeightLayout.RowBytes(type, k);
        int perThread = (int)Math.Max(1, ((long)outDim * k + threads * tileFloats - 1) / (threads * tileFloats));
        nint wp = (nint)w, xp = (nint)x, yp = (nint)y;
        RowSplit.For(outDim, threads * perThread, 16, threads, (j0, j1) =>
        {
            int n = j1 - j0;
            var tile = KernelScratch.Floats((long)n * k);
            fixed (float* t = tile)
            {
                var src = (byte*)wp + j0 * rowBytes;
                if (type is WeightType.F16) TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n * k), new Span<float>(t, n * k));
                else if (type is WeightType.BF16) Dequantize.Row(WeightType.BF16, src, new Span<float>(t, n * k));
                else for (int j = 0; j < n; j++) Dequantize.Row(type, src + j * rowBytes, new Span<float>(t + (long)j * k, k));
                OpenBlas.MatMulTransposed((float*)xp, t, (float*)yp + j0, rows, k, n, ldc: outDim);
            }
        });
    }
}

/// <summary>Per-thread fp32 scratch for the kernels, grown as needed and reused (the decode loop allocates nothing).</summary>
internal static class KernelScratch
{
    [ThreadStatic] private static float[]? _floats;

    /// <summary>A pinned array of at least <paramref name="length"/> floats, this thread's own.</summary>
    public static float[] Floats(long length) =>
        _floats is { } s && s.Length >= length ? s : _floats = GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
}
