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
/// </para>
/// <para>
/// vpdpbusd multiplies unsigned by signed bytes. The activations are made unsigned by adding 128
/// (x ^ 0x80), and the accumulator starts at -128·Σw per lane, so the lanes hold Σ x·w exactly;
/// Σw is computed once per weight block and reused for every activation row of a tile.
/// </para>
/// </summary>
internal static unsafe class Q8MatMul
{
    /// <summary>False forces the AVX2 or managed path (tests compare them).</summary>
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
        if (UseAvx2 && !UseVnni)
        {
            Q8Avx2.Range(w, rowBytes, xq, xd, y, rows, blocks, outDim, j0, j1);
            return;
        }
        // Groups of 4 weight rows, each against all activation rows.
        for (int j = j0; j < j1; j += 4)
        {
            int n = Math.Min(4, j1 - j);
            if (UseVnni && n == 4) Vnni4(w + j * rowBytes, rowBytes, xq, xd, y + j, rows, blocks, outDim);
            else
                for (int c = 0; c < n; c++)
                    for (int r = 0; r < rows; r++)
                        y[(long)r * outDim + j + c] = UseVnni
                            ? VnniDot(w + (j + c) * rowBytes, xq + (long)r * blocks * 32, xd + (long)r * blocks, blocks)
                            : ManagedDot(w + (j + c) * rowBytes, xq + (long)r * blocks * 32, xd + (long)r * blocks, blocks);
        }
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

    private static float VnniDot(byte* w, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        var ones = Vector256.Create((byte)1);
        var bias = Vector256.Create((byte)0x80);
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = w + b * 34;
            var wq = Vector256.Load((sbyte*)(blk + 2));
            var corr = Vector256<int>.Zero - (AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, ones, wq) << 7);
            var xu = Vector256.Load((byte*)(xq + b * 32)) ^ bias;
            var lanes = AvxVnni.MultiplyWideningAndAdd(corr, xu, wq);
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(lanes), Vector256.Create(Fp16.ToFloat(*(ushort*)blk) * xd[b]), acc);
        }
        return Sum8(acc);
    }

    /// <summary>4 weight rows against every activation row: 4x4 register tiles, then the rest one row at a time.</summary>
    private static void Vnni4(byte* w, long rowBytes, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        var ones = Vector256.Create((byte)1);
        var bias = Vector256.Create((byte)0x80);
        int r = 0;
        for (; r + 4 <= rows; r += 4)
        {
            Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
            Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
            Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
            Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
            sbyte* x0 = xq + (long)r * blocks * 32, x1 = x0 + blocks * 32, x2 = x1 + blocks * 32, x3 = x2 + blocks * 32;
            float* d0 = xd + (long)r * blocks, d1 = d0 + blocks, d2 = d1 + blocks, d3 = d2 + blocks;
            for (int b = 0; b < blocks; b++)
            {
                long o = b * 34L;
                var q0 = Vector256.Load((sbyte*)(w0 + o + 2)); var q1 = Vector256.Load((sbyte*)(w1 + o + 2));
                var q2 = Vector256.Load((sbyte*)(w2 + o + 2)); var q3 = Vector256.Load((sbyte*)(w3 + o + 2));
                var c0 = Corr(ones, q0); var c1 = Corr(ones, q1); var c2 = Corr(ones, q2); var c3 = Corr(ones, q3);
                float s0 = Fp16.ToFloat(*(ushort*)(w0 + o)), s1 = Fp16.ToFloat(*(ushort*)(w1 + o));
                float s2 = Fp16.ToFloat(*(ushort*)(w2 + o)), s3 = Fp16.ToFloat(*(ushort*)(w3 + o));
                int xo = b * 32;
                var u = Vector256.Load((byte*)(x0 + xo)) ^ bias; float dx = d0[b];
                a00 = Step(a00, c0, u, q0, s0 * dx); a01 = Step(a01, c1, u, q1, s1 * dx); a02 = Step(a02, c2, u, q2, s2 * dx); a03 = Step(a03, c3, u, q3, s3 * dx);
                u = Vector256.Load((byte*)(x1 + xo)) ^ bias; dx = d1[b];
                a10 = Step(a10, c0, u, q0, s0 * dx); a11 = Step(a11, c1, u, q1, s1 * dx); a12 = Step(a12, c2, u, q2, s2 * dx); a13 = Step(a13, c3, u, q3, s3 * dx);
                u = Vector256.Load((byte*)(x2 + xo)) ^ bias; dx = d2[b];
                a20 = Step(a20, c0, u, q0, s0 * dx); a21 = Step(a21, c1, u, q1, s1 * dx); a22 = Step(a22, c2, u, q2, s2 * dx); a23 = Step(a23, c3, u, q3, s3 * dx);
                u = Vector256.Load((byte*)(x3 + xo)) ^ bias; dx = d3[b];
                a30 = Step(a30, c0, u, q0, s0 * dx); a31 = Step(a31, c1, u, q1, s1 * dx); a32 = Step(a32, c2, u, q2, s2 * dx); a33 = Step(a33, c3, u, q3, s3 * dx);
            }
            float* y0 = y + (long)r * outDim, y1 = y0 + outDim, y2 = y1 + outDim, y3 = y2 + outDim;
            y0[0] = Sum8(a00); y0[1] = Sum8(a01); y0[2] = Sum8(a02); y0[3] = Sum8(a03);
            y1[0] = Sum8(a10); y1[1] = Sum8(a11); y1[2] = Sum8(a12); y1[3] = Sum8(a13);
            y2[0] = Sum8(a20); y2[1] = Sum8(a21); y2[2] = Sum8(a22); y2[3] = Sum8(a23);
            y3[0] = Sum8(a30); y3[1] = Sum8(a31); y3[2] = Sum8(a32); y3[3] = Sum8(a33);
        }
        for (; r < rows; r++)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            sbyte* x = xq + (long)r * blocks * 32;
            float* d = xd + (long)r * blocks;
            for (int b = 0; b < blocks; b++)
            {
                long o = b * 34L;
                var q0 = Vector256.Load((sbyte*)(w0 + o + 2)); var q1 = Vector256.Load((sbyte*)(w1 + o + 2));
                var q2 = Vector256.Load((sbyte*)(w2 + o + 2)); var q3 = Vector256.Load((sbyte*)(w3 + o + 2));
                var u = Vector256.Load((byte*)(x + b * 32)) ^ bias; float dx = d[b];
                a0 = Step(a0, Corr(ones, q0), u, q0, Fp16.ToFloat(*(ushort*)(w0 + o)) * dx);
                a1 = Step(a1, Corr(ones, q1), u, q1, Fp16.ToFloat(*(ushort*)(w1 + o)) * dx);
                a2 = Step(a2, Corr(ones, q2), u, q2, Fp16.ToFloat(*(ushort*)(w2 + o)) * dx);
                a3 = Step(a3, Corr(ones, q3), u, q3, Fp16.ToFloat(*(ushort*)(w3 + o)) * dx);
            }
            float* yr = y + (long)r * outDim;
            yr[0] = Sum8(a0); yr[1] = Sum8(a1); yr[2] = Sum8(a2); yr[3] = Sum8(a3);
        }
    }

    /// <summary>-128·Σw per lane: the accumulator start that makes (x+128)·w sum to x·w.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Corr(Vector256<byte> ones, Vector256<sbyte> w) =>
        Vector256<int>.Zero - (AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, ones, w) << 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Step(Vector256<float> acc, Vector256<int> corr, Vector256<byte> xu, Vector256<sbyte> w, float scale) =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(AvxVnni.MultiplyWideningAndAdd(corr, xu, w)), Vector256.Create(scale), acc);
}
