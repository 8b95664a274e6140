using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Matrix products with 16-bit weights (bf16 or fp16) widened to fp32 as they are read.
/// One activation row (decode): a dot product per weight row, the weights streamed once. Several
/// rows (prefill, batched decode): a tile of weight rows is widened into an fp32 scratch that stays
/// in cache and multiplied by OpenBLAS's sgemm, so the widening is paid once per tile, not once per
/// activation row; without OpenBLAS each pair is the decode dot product.
/// </summary>
internal static unsafe class HalfMatMul
{
    /// <summary>y[r, j] = x[r] · w[j] for rows with the decode kernel (also the managed fallback).</summary>
    public static void Dots(WeightType type, byte* w, float* x, float* y, int rows, int k, int outDim, int threads)
    {
        int items = threads == 1 ? 1 : Math.Min(outDim, threads * 8);
        long rowBytes = 2L * k;
        void Item(int i)
        {
            int j0 = (int)((long)outDim * i / items), j1 = (int)((long)outDim * (i + 1) / items);
            var scratch = type == WeightType.F16 ? Scratch(k) : null;
            for (int j = j0; j < j1; j++)
            {
                var wr = w + j * rowBytes;
                if (type == WeightType.F16)
                {
                    // No scalar or vector F16C in .NET: TensorPrimitives' vectorized conversion, then a dot.
                    TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(wr, k), scratch.AsSpan(0, k));
                    var ws = new ReadOnlySpan<float>(scratch, 0, k);
                    for (int r = 0; r < rows; r++) y[(long)r * outDim + j] = TensorPrimitives.Dot(ws, new ReadOnlySpan<float>(x + (long)r * k, k));
                }
                else
                {
                    for (int r = 0; r < rows; r++) y[(long)r * outDim + j] = Bf16Dot((ushort*)wr, x + (long)r * k, k);
                }
            }
        }
        if (items == 1) Item(0);
        else Parallel.For(0, items, new ParallelOptions { MaxDegreeOfParallelism = threads }, Item);
    }

    /// <summary>
    /// bf16 row · fp32 vector: 32 weights per step widened by a shift into two 16-lane fp32 vectors
    /// (AVX-512 when present; Vector512 falls back to two 256-bit halves or scalar code with the same
    /// lane arithmetic, so the results are the same everywhere).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16Dot(ushort* w, float* x, int k)
    {
        Vector512<float> a0 = default, a1 = default;
        int i = 0;
        for (; i + 32 <= k; i += 32)
        {
            var raw = Vector512.Load(w + i);
            var lo = (Vector512.WidenLower(raw) << 16).AsSingle();
            var hi = (Vector512.WidenUpper(raw) << 16).AsSingle();
            a0 = Vector512.FusedMultiplyAdd(lo, Vector512.Load(x + i), a0);
            a1 = Vector512.FusedMultiplyAdd(hi, Vector512.Load(x + i + 16), a1);
        }
        float sum = Vector512.Sum(a0 + a1);
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(Fp16.FromBf16(w[i]), x[i], sum);
        return sum;
    }

    /// <summary>y[rows, outDim] = x[rows, k] · w^T through sgemm on widened tiles of weight rows.</summary>
    public static void Gemm(WeightType type, byte* w, float* x, float* y, int rows, int k, int outDim, int threads)
    {
        // ~1 MB of fp32 per tile: fits L2 next to the activations, large enough for sgemm's blocking.
        int tileRows = Math.Max(16, (1 << 18) / k / 16 * 16);
        var tile = Scratch((long)tileRows * k);
        fixed (float* t = tile)
        {
            var tp = t;
            for (int j0 = 0; j0 < outDim; j0 += tileRows)
            {
                int n = Math.Min(tileRows, outDim - j0);
                Widen(type, w + 2L * j0 * k, tp, n, k, threads);
                OpenBlas.MatMulTransposed(x, tp, y + j0, rows, k, n, ldc: outDim);
            }
        }
    }

    private static void Widen(WeightType type, byte* w, float* dst, int n, int k, int threads)
    {
        void Rows(int r0, int r1)
        {
            var src = w + 2L * r0 * k;
            var count = (r1 - r0) * k;
            if (type == WeightType.F16) TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, count), new Span<float>(dst + (long)r0 * k, count));
            else Dequantize.Row(WeightType.BF16, src, new Span<float>(dst + (long)r0 * k, count));
        }
        if (threads == 1 || n < 2) Rows(0, n);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => Rows(n * i / threads, n * (i + 1) / threads));
    }

    [ThreadStatic] private static float[]? _scratch;

    private static float[] Scratch(long length) =>
        _scratch is { } s && s.Length >= length ? s : _scratch = GC.AllocateUninitializedArray<float>(checked((int)length), pinned: true);
}
