using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// The Q8_0 products of <see cref="Q8MatMul"/> in 256-bit vectors, as llama.cpp's AVX2
/// mul_sum_i8_pairs: |w| (unsigned) times x with w's sign (vpsignb), each 4 consecutive products
/// summed exactly into an int32 lane, by vpdpbusd where the CPU has AVX-VNNI (<see cref="VnniLanes"/>)
/// and otherwise by vpmaddubsw then vpmaddwd (<see cref="Avx2Lanes"/>). Both give the same exact lanes
/// (|w| ≤ 128, |x| ≤ 127: a pair is at most 32512, no int16 saturation), so results equal the
/// managed path bit for bit. The kernels are generic over the lane sum so the JIT compiles each
/// without a branch in the loops.
/// </summary>
internal static unsafe class Q8Avx2
{
    /// <summary>How 32 products |w|·(±x) are summed into 8 exact int32 lanes of 4 consecutive products.</summary>
    internal interface ILaneSum
    {
        static abstract Vector256<int> Of(Vector256<byte> absW, Vector256<sbyte> signedX);
    }

    /// <summary>AVX2: bytes to int16 pairs (vpmaddubsw), pairs to int32 (vpmaddwd by ones).</summary>
    internal readonly struct Avx2Lanes : ILaneSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Of(Vector256<byte> absW, Vector256<sbyte> signedX) =>
            Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(absW, signedX), Vector256.Create((short)1));
    }

    /// <summary>AVX-VNNI: one vpdpbusd.</summary>
    internal readonly struct VnniLanes : ILaneSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Of(Vector256<byte> absW, Vector256<sbyte> signedX) =>
            AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, absW, signedX);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Lanes<T>(Vector256<byte> absW, Vector256<sbyte> w, Vector256<sbyte> x) where T : struct, ILaneSum =>
        T.Of(absW, Avx2.Sign(x, w));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Step<T>(Vector256<float> acc, Vector256<byte> absW, Vector256<sbyte> w, Vector256<sbyte> x, float scale) where T : struct, ILaneSum =>
        Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(absW, w, x)), Vector256.Create(scale), acc);

    private static float Dot<T>(byte* w, sbyte* xq, float* xd, int blocks) where T : struct, ILaneSum
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++)
        {
            byte* blk = w + b * 34;
            var q = Vector256.Load((sbyte*)(blk + 2));
            acc = Step<T>(acc, Avx2.Abs(q), q, Vector256.Load(xq + b * 32), Fp16.ToFloat(*(ushort*)blk) * xd[b]);
        }
        return Q8MatMul.Sum8(acc);
    }

    /// <summary>
    /// Outputs [<paramref name="j0"/>, <paramref name="j1"/>) of every activation row (rows of y are
    /// <paramref name="outDim"/> apart). Groups of 4 weight rows: 4 activation rows at a time in two 4x2
    /// register tiles, the remaining rows (all of them in single-stream decode) one at a time against the
    /// 4 weight rows. Each kernel is its own small method: one method holding every tile ran out of the
    /// 16 vector registers and kept its accumulators on the stack, a store and a reload per block.
    /// </summary>
    public static void Range(byte* w, long rowBytes, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim, int j0, int j1, bool vnni)
    {
        if (vnni) Range<VnniLanes>(w, rowBytes, xq, xd, y, rows, blocks, outDim, j0, j1);
        else Range<Avx2Lanes>(w, rowBytes, xq, xd, y, rows, blocks, outDim, j0, j1);
    }

    private static void Range<T>(byte* w, long rowBytes, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim, int j0, int j1) where T : struct, ILaneSum
    {
        long xStride = (long)blocks * 32;
        float* xdT = xd + (long)rows * blocks;
        int j = j0;
        for (; j + 4 <= j1; j += 4)
        {
            byte* wj = w + j * rowBytes;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                Tile4x2<T>(wj, rowBytes, xq + r * xStride, xdT + (long)r * blocks, y + (long)r * outDim + j, blocks, outDim);
                Tile4x2<T>(wj + 2 * rowBytes, rowBytes, xq + r * xStride, xdT + (long)r * blocks, y + (long)r * outDim + j + 2, blocks, outDim);
            }
            for (; r < rows; r++) Row1x4<T>(wj, rowBytes, xq + r * xStride, xd + (long)r * blocks, y + (long)r * outDim + j, blocks);
        }
        for (; j < j1; j++)
            for (int r = 0; r < rows; r++)
                y[(long)r * outDim + j] = Dot<T>(w + j * rowBytes, xq + r * xStride, xd + (long)r * blocks, blocks);
    }

    /// <summary>How many groups of 4 weight rows ahead single-row decode prefetches (0: none). Streaming
    /// from memory, the int8 work per cache line is enough to keep the hardware prefetchers from running
    /// far ahead (a 576x49152 product read 5.3 GB/s where fp32 read 14).</summary>
    internal static readonly int PrefetchGroups = int.TryParse(Environment.GetEnvironmentVariable("LLMCLUSTER_Q8_PREFETCH"), out var g) ? g : 4;

    /// <summary>One activation row against 4 weight rows: y[0..3].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1x4<T>(byte* w, long rowBytes, sbyte* x, float* d, float* y, int blocks) where T : struct, ILaneSum
    {
        byte* w0 = w, w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        // The 4 rows are contiguous, and so are the groups after them: fetch the group PrefetchGroups
        // ahead, 4·34 bytes of it per block (three prefetches no more than 48 bytes apart miss no line).
        byte* ahead = w + PrefetchGroups * 4 * rowBytes;
        float* table = Fp16.TablePointer;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            if (PrefetchGroups > 0)
            {
                byte* p = ahead + 4 * o;
                Sse.Prefetch0(p); Sse.Prefetch0(p + 48); Sse.Prefetch0(p + 96);
            }
            var xv = Vector256.Load(x + b * 32);
            var dx = Vector256.Create(d[b]);
            var q = Vector256.Load((sbyte*)(w0 + o + 2));
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(Avx2.Abs(q), q, xv)), Vector256.Create(table[*(ushort*)(w0 + o)]) * dx, a0);
            q = Vector256.Load((sbyte*)(w1 + o + 2));
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(Avx2.Abs(q), q, xv)), Vector256.Create(table[*(ushort*)(w1 + o)]) * dx, a1);
            q = Vector256.Load((sbyte*)(w2 + o + 2));
            a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(Avx2.Abs(q), q, xv)), Vector256.Create(table[*(ushort*)(w2 + o)]) * dx, a2);
            q = Vector256.Load((sbyte*)(w3 + o + 2));
            a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(Avx2.Abs(q), q, xv)), Vector256.Create(table[*(ushort*)(w3 + o)]) * dx, a3);
        }
        y[0] = Q8MatMul.Sum8(a0); y[1] = Q8MatMul.Sum8(a1); y[2] = Q8MatMul.Sum8(a2); y[3] = Q8MatMul.Sum8(a3);
    }

    /// <summary>4 activation rows against 2 weight rows: 8 accumulators, each weight block's |w| and
    /// scale shared by the 4 rows, each activation block by the 2 weight rows; y[r·outDim + 0..1].
    /// <paramref name="dT"/> holds the 4 rows' scales per block ([block][4]): the 8 products dw·dx of a
    /// block are two 4-wide multiplies, then broadcast from the stack by the load ports.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x2<T>(byte* w, long rowBytes, sbyte* xq, float* dT, float* y, int blocks, int outDim) where T : struct, ILaneSum
    {
        byte* w0 = w, w1 = w + rowBytes;
        sbyte* x0 = xq, x1 = x0 + blocks * 32, x2 = x1 + blocks * 32, x3 = x2 + blocks * 32;
        float* table = Fp16.TablePointer;
        float* sd = stackalloc float[8];
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int b = 0; b < blocks; b++)
        {
            long o = b * 34L;
            int xo = b * 32;
            var dx = Vector128.Load(dT + 4 * b);
            (Vector128.Create(table[*(ushort*)(w0 + o)]) * dx).Store(sd);
            (Vector128.Create(table[*(ushort*)(w1 + o)]) * dx).Store(sd + 4);
            var q0 = Vector256.Load((sbyte*)(w0 + o + 2)); var q1 = Vector256.Load((sbyte*)(w1 + o + 2));
            var m0 = Avx2.Abs(q0); var m1 = Avx2.Abs(q1);
            var xv = Vector256.Load(x0 + xo);
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m0, q0, xv)), Avx.BroadcastScalarToVector256(sd), a00);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m1, q1, xv)), Avx.BroadcastScalarToVector256(sd + 4), a01);
            xv = Vector256.Load(x1 + xo);
            a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m0, q0, xv)), Avx.BroadcastScalarToVector256(sd + 1), a10);
            a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m1, q1, xv)), Avx.BroadcastScalarToVector256(sd + 5), a11);
            xv = Vector256.Load(x2 + xo);
            a20 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m0, q0, xv)), Avx.BroadcastScalarToVector256(sd + 2), a20);
            a21 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m1, q1, xv)), Avx.BroadcastScalarToVector256(sd + 6), a21);
            xv = Vector256.Load(x3 + xo);
            a30 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m0, q0, xv)), Avx.BroadcastScalarToVector256(sd + 3), a30);
            a31 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Lanes<T>(m1, q1, xv)), Avx.BroadcastScalarToVector256(sd + 7), a31);
        }
        y[0] = Q8MatMul.Sum8(a00); y[1] = Q8MatMul.Sum8(a01); y += outDim;
        y[0] = Q8MatMul.Sum8(a10); y[1] = Q8MatMul.Sum8(a11); y += outDim;
        y[0] = Q8MatMul.Sum8(a20); y[1] = Q8MatMul.Sum8(a21); y += outDim;
        y[0] = Q8MatMul.Sum8(a30); y[1] = Q8MatMul.Sum8(a31);
    }
}
