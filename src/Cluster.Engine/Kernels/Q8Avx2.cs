using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// The Q8_0 products of <see cref="Q8MatMul"/> on AVX2 without VNNI, as llama.cpp's AVX2
/// mul_sum_i8_pairs: |w| (unsigned) times x with w's sign (vpsignb), pairs summed to int16 by
/// vpmaddubsw, then pairs of those to int32 by vpmaddwd. The int32 lanes are the same sums of 4
/// consecutive products as vpdpbusd's, exact (|w| ≤ 128, |x| ≤ 127: a pair is at most 32512, no
/// int16 saturation), so results equal the VNNI and managed paths bit for bit.
/// </summary>
internal static unsafe class Q8Avx2
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Lanes(Vector256<byte> absW, Vector256<sbyte> w, Vector256<sbyte> x) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(absW, Avx2.Sign(x, w)), Vector256.Create((short)1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Step(Vector256<float> acc, Vector256<byte> absW, Vector256<sbyte> w, Vector256<sbyte> x, float scale) =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes(absW, w, x)), Vector256.Create(scale), acc);

    public static float Dot(byte* w, sbyte* xq, float* xd, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = w + b * 34;
            var q = Vector256.Load((sbyte*)(blk + 2));
            acc = Step(acc, Avx2.Abs(q), q, Vector256.Load(xq + b * 32), Fp16.ToFloat(*(ushort*)blk) * xd[b]);
        }
        return Q8MatMul.Sum8(acc);
    }

    /// <summary>4 weight rows against every activation row, 4x4 register tiles (rows of y are outDim apart).</summary>
    public static void Tile4(byte* w, long rowBytes, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
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
                var m0 = Avx2.Abs(q0); var m1 = Avx2.Abs(q1); var m2 = Avx2.Abs(q2); var m3 = Avx2.Abs(q3);
                float s0 = Fp16.ToFloat(*(ushort*)(w0 + o)), s1 = Fp16.ToFloat(*(ushort*)(w1 + o));
                float s2 = Fp16.ToFloat(*(ushort*)(w2 + o)), s3 = Fp16.ToFloat(*(ushort*)(w3 + o));
                int xo = b * 32;
                var x = Vector256.Load(x0 + xo); float dx = d0[b];
                a00 = Step(a00, m0, q0, x, s0 * dx); a01 = Step(a01, m1, q1, x, s1 * dx); a02 = Step(a02, m2, q2, x, s2 * dx); a03 = Step(a03, m3, q3, x, s3 * dx);
                x = Vector256.Load(x1 + xo); dx = d1[b];
                a10 = Step(a10, m0, q0, x, s0 * dx); a11 = Step(a11, m1, q1, x, s1 * dx); a12 = Step(a12, m2, q2, x, s2 * dx); a13 = Step(a13, m3, q3, x, s3 * dx);
                x = Vector256.Load(x2 + xo); dx = d2[b];
                a20 = Step(a20, m0, q0, x, s0 * dx); a21 = Step(a21, m1, q1, x, s1 * dx); a22 = Step(a22, m2, q2, x, s2 * dx); a23 = Step(a23, m3, q3, x, s3 * dx);
                x = Vector256.Load(x3 + xo); dx = d3[b];
                a30 = Step(a30, m0, q0, x, s0 * dx); a31 = Step(a31, m1, q1, x, s1 * dx); a32 = Step(a32, m2, q2, x, s2 * dx); a33 = Step(a33, m3, q3, x, s3 * dx);
            }
            float* y0 = y + (long)r * outDim, y1 = y0 + outDim, y2 = y1 + outDim, y3 = y2 + outDim;
            y0[0] = Q8MatMul.Sum8(a00); y0[1] = Q8MatMul.Sum8(a01); y0[2] = Q8MatMul.Sum8(a02); y0[3] = Q8MatMul.Sum8(a03);
            y1[0] = Q8MatMul.Sum8(a10); y1[1] = Q8MatMul.Sum8(a11); y1[2] = Q8MatMul.Sum8(a12); y1[3] = Q8MatMul.Sum8(a13);
            y2[0] = Q8MatMul.Sum8(a20); y2[1] = Q8MatMul.Sum8(a21); y2[2] = Q8MatMul.Sum8(a22); y2[3] = Q8MatMul.Sum8(a23);
            y3[0] = Q8MatMul.Sum8(a30); y3[1] = Q8MatMul.Sum8(a31); y3[2] = Q8MatMul.Sum8(a32); y3[3] = Q8MatMul.Sum8(a33);
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
                var xv = Vector256.Load(x + b * 32); float dx = d[b];
                a0 = Step(a0, Avx2.Abs(q0), q0, xv, Fp16.ToFloat(*(ushort*)(w0 + o)) * dx);
                a1 = Step(a1, Avx2.Abs(q1), q1, xv, Fp16.ToFloat(*(ushort*)(w1 + o)) * dx);
                a2 = Step(a2, Avx2.Abs(q2), q2, xv, Fp16.ToFloat(*(ushort*)(w2 + o)) * dx);
                a3 = Step(a3, Avx2.Abs(q3), q3, xv, Fp16.ToFloat(*(ushort*)(w3 + o)) * dx);
            }
            float* yr = y + (long)r * outDim;
            yr[0] = Q8MatMul.Sum8(a0); yr[1] = Q8MatMul.Sum8(a1); yr[2] = Q8MatMul.Sum8(a2); yr[3] = Q8MatMul.Sum8(a3);
        }
    }
}
