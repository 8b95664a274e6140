using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Matrix products with 16-bit weights (bf16 or fp16) widened to fp32 as they are read: a dot
/// product per (activation row, weight row), the weights streamed once. Used for fp16 decode, and for
/// every row count without OpenBLAS; with it, several rows go through <see cref="DequantGemm"/>. bf16
/// goes through <see cref="Fp32Dots"/>'s register tiles instead where 256-bit vectors are native.
/// </summary>
internal static unsafe class HalfMatMul
{
    /// <summary>y[r, j] = x[r] · w[j] for every row pair, split over <paramref name="threads"/> through
    /// .NET's pool (the backend runs <see cref="Range"/> on its <see cref="WorkerTeam"/> instead).</summary>
    public static void Dots(WeightType type, byte* w, float* x, float* y, int rows, int k, int outDim, int threads)
    {
        nint wp = (nint)w, xp = (nint)x, yp = (nint)y;
        RowSplit.For(outDim, threads == 1 ? 1 : threads * (rows == 1 ? 1 : 4), 16, threads,
            (j0, j1) => Range(type, (byte*)wp, (float*)xp, (float*)yp, rows, k, outDim, j0, j1));
    }

    /// <summary>Outputs [<paramref name="j0"/>, <paramref name="j1"/>) of every row.</summary>
    public static void Range(WeightType type, byte* w, float* x, float* y, int rows, int k, int outDim, int j0, int j1)
    {
        long rowBytes = 2L * k;
        var scratch = type == WeightType.F16 ? KernelScratch.Floats(k) : null;
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

    /// <summary>
    /// bf16 row · fp32 vector: 32 weights per step widened by a shift into four 8-lane fp32 vectors
    /// (AVX2; Vector256 falls back to scalar code with the same lane arithmetic elsewhere, so the
    /// results are the same everywhere). Four accumulators hide the FMA latency.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16Dot(ushort* w, float* x, int k)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + 32 <= k; i += 32)
        {
            var r0 = Vector256.Load(w + i);
            var r1 = Vector256.Load(w + i + 16);
            a0 = Vector256.FusedMultiplyAdd((Vector256.WidenLower(r0) << 16).AsSingle(), Vector256.Load(x + i), a0);
            a1 = Vector256.FusedMultiplyAdd((Vector256.WidenUpper(r0) << 16).AsSingle(), Vector256.Load(x + i + 8), a1);
            a2 = Vector256.FusedMultiplyAdd((Vector256.WidenLower(r1) << 16).AsSingle(), Vector256.Load(x + i + 16), a2);
            a3 = Vector256.FusedMultiplyAdd((Vector256.WidenUpper(r1) << 16).AsSingle(), Vector256.Load(x + i + 24), a3);
        }
        float sum = Sum8((a0 + a1) + (a2 + a3));
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(Fp16.FromBf16(w[i]), x[i], sum);
        return sum;
    }

    /// <summary>((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)): a fixed order of summing 8 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum8(Vector256<float> v)
    {
        var t = v.GetLower() + v.GetUpper();                      // (a0+a4, a1+a5, a2+a6, a3+a7)
        var u = t + Vector128.Shuffle(t, Vector128.Create(2, 3, 0, 1)); // (t0+t2, t1+t3, ..)
        return u.ToScalar() + u.GetElement(1);
    }
}
