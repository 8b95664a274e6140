using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// y[r, j] = Σ_b dw[j,b]·dx[r,b]·(qw[j,b] · qx[r,b]) for Q8_0 weights (ggml block_q8_0 rows) and
/// activations quantized per block of 32 (<see cref="Quantize.ActivationRow"/>): the
/// dequantization is fused into int8 dot products, as llama.cpp's ggml_vec_dot_q8_0_q8_0.
/// <para>
/// Every (row, weight row) pair is computed the same way whatever the path, so decode, prefill and
/// batched decode give bit-identical results, and the managed fallback equals the AVX-VNNI path:
/// the 32 products of a block are summed exactly in 8 int32 lanes of 4 consecutive bytes (the lanes
/// of vpdpbusd), each lane is added to an fp32 lane accumulator with one fused multiply-add by
/// dw·dx, and the 8 accumulators are summed in a fixed order at the end (<see cref="Sum8"/>).
/// The vector kernels are <see cref="Q8Avx2"/>'s (vpdpbusd where the CPU has AVX-VNNI).
/// </para>
/// </summary>
internal static unsafe class Q8MatMul
{
    /// <summary>False sums lanes with AVX2's pair instructions even where vpdpbusd exists (tests compare them).</summary>
    public static bool UseVnni { get; set; } = AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>False forces the managed path.</summary>
    public static bool UseAvx2 { get; set; } = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>All outputs, split over <paramref name="threads"/> through .NET's pool (the backend
    /// runs <see cref="Range"/> on its <see cref="WorkerTeam"/> instead, which allocates nothing).</summary>
    /// <param name="w">outDim rows of <paramref name="blocks"/> Q8_0 blocks.</param>
    /// <param name="xq">rows × blocks × 32 int8.</param>
    /// <param name="xd">rows × blocks scales.</param>
    /// <param name="y">rows × outDim results.</param>
    public static void Run(byte* w, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim, int threads)
    {
        nint wp = (nint)w, xqp = (nint)xq, xdp = (nint)xd, yp = (nint)y;
        RowSplit.For(outDim, threads == 1 ? 1 : threads * (rows == 1 ? 1 : 4), 16, threads,
            (j0, j1) => Range((byte*)wp, (sbyte*)xqp, (float*)xdp, (float*)yp, rows, blocks, outDim, j0, j1));
    }

    /// <summary>Outputs [<paramref name="j0"/>, <paramref name="j1"/>) of every activation row, arguments
    /// as <see cref="Run"/>. A weight row is read from memory once and reused from L1 by every activation row.</summary>
    public static void Range(byte* w, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim, int j0, int j1)
    {
        long rowBytes = (long)blocks * 34;
        if (UseAvx2)
        {
            Q8Avx2.Range(w, rowBytes, xq, xd, y, rows, blocks, outDim, j0, j1, UseVnni);
            return;
        }
        for (int j = j0; j < j1; j++)
            for (int r = 0; r < rows; r++)
                y[(long)r * outDim + j] = ManagedDot(w + j * rowBytes, xq + (long)r * blocks * 32, xd + (long)r * blocks, blocks);
    }

    /// <summary>The reference arithmetic: 8 exact int lanes per block, fp32 fma per lane, fixed-order sum.</summary>
    public static float ManagedDot(byte* w, sbyte* xq, float* xd, int blocks)
    {
        Span<float> acc = stackalloc float[8];
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = w + b * 34;
            var q = (sbyte*)(blk + 2);
            var x = xq + b * 32;
            float s = Fp16.ToFloat(*(ushort*)blk) * xd[b];
            for (int l = 0; l < 8; l++)
            {
                int lane = q[4 * l] * x[4 * l] + q[4 * l + 1] * x[4 * l + 1] + q[4 * l + 2] * x[4 * l + 2] + q[4 * l + 3] * x[4 * l + 3];
                acc[l] = MathF.FusedMultiplyAdd(lane, s, acc[l]);
            }
        }
        return Sum8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]);
    }

    /// <summary>((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)): the order <see cref="Sum8(Vector256{float})"/> adds in.</summary>
    public static float Sum8(float a0, float a1, float a2, float a3, float a4, float a5, float a6, float a7)
    {
        float t0 = a0 + a4, t1 = a1 + a5, t2 = a2 + a6, t3 = a3 + a7;
        return (t0 + t2) + (t1 + t3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Sum8(Vector256<float> v)
    {
        var t = v.GetLower() + v.GetUpper();                      // (a0+a4, a1+a5, a2+a6, a3+a7)
        var u = t + Vector128.Shuffle(t, Vector128.Create(2, 3, 0, 1)); // (t0+t2, t1+t3, ..)
        return u.ToScalar() + u.GetElement(1);
    }
}
