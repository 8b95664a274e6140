using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Q8_0 weights repacked at load so that the 8 int32 lanes of one vpdpbusd are 8 output rows (as
/// llama.cpp's CPU "repack" buffers do for its int8 GEMMs). In ggml's row layout the lanes of a dot
/// product are 8 positions of one row, so every (activation row, weight row, block) pair needs its own
/// horizontal work: a conversion and a fused multiply-add per pair and block. Here 4 consecutive
/// activation bytes are broadcast to all lanes and multiplied with 4 bytes of 8 weight rows at once:
/// a block of 32 columns of 8 outputs is 8 vpdpbusd into one int32 vector, then one conversion and
/// one multiply-add for all 8.
/// <para>
/// Layout: rows in groups of <see cref="Group"/>, the groups padded to an even count (the kernels
/// take 2 groups, 16 outputs, at a time); per group and block of 32 columns, <see cref="BlockBytes"/>
/// bytes: the 8 rows' scales as fp32, then for each of the 8 column quads the 8 rows' 4 bytes. The
/// bytes are stored biased (w + 128, as unsigned), the operand vpdpbusd wants unsigned; the bias is
/// taken out by starting the sum at -128·Σx, which is computed once per activation block.
/// </para>
/// <para>
/// Arithmetic, the same on every path (VNNI, AVX2, managed) and for every batch size, so a row's
/// result never depends on the other rows: per block the exact integer Σ w·x (at most
/// 32·128·127 in magnitude, exact as fp32 too), then acc = fma(Σ, dw·dx, acc), blocks in order.
/// </para>
/// </summary>
internal static unsafe class Q8Interleaved
{
    /// <summary>Weight rows per group: the 8 int32 lanes of a 256-bit vector.</summary>
    public const int Group = 8;

    /// <summary>Bytes of one group's block: 8 fp32 scales and 8 × 32 biased int8.</summary>
    public const int BlockBytes = Group * sizeof(float) + Group * 32;

    /// <summary>False sums with AVX2's pair instructions even where vpdpbusd exists (tests compare the
    /// paths; LLMCLUSTER_Q8_VNNI=0 measures a CPU without VNNI).</summary>
    public static bool UseVnni { get; set; } = AvxVnni.IsSupported && Avx2.IsSupported && Fma.IsSupported
        && Environment.GetEnvironmentVariable("LLMCLUSTER_Q8_VNNI") != "0";

    /// <summary>False forces the managed path.</summary>
    public static bool UseAvx2 { get; set; } = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Bytes of <paramref name="rows"/> rows of <paramref name="blocks"/> blocks repacked.</summary>
    public static long Bytes(long rows, int blocks) => Groups(rows) * blocks * (long)BlockBytes;

    /// <summary>Groups of 8 rows, padded to an even count.</summary>
    public static long Groups(long rows) => (rows + 2 * Group - 1) / (2 * Group) * 2;

    /// <summary>Repacks ggml Q8_0 rows (<paramref name="blocks"/> blocks of 34 bytes each) into
    /// <paramref name="dst"/> (<see cref="Bytes"/> bytes); padding rows are zeros.</summary>
    public static void Pack(byte* src, long rows, int blocks, byte* dst)
    {
        long rowBytes = blocks * 34L, groups = Groups(rows);
        for (long g = 0; g < groups; g++)
            for (int b = 0; b < blocks; b++)
            {
                byte* o = dst + (g * blocks + b) * BlockBytes;
                for (int r = 0; r < Group; r++)
                {
                    long row = g * Group + r;
                    byte* blk = row < rows ? src + row * rowBytes + b * 34L : null;
                    ((float*)o)[r] = blk != null ? Fp16.ToFloat(*(ushort*)blk) : 0f;
                    // 4 bytes at a time: quad q of this row goes to lane r of the q-th 32-byte vector.
                    for (int quad = 0; quad < 8; quad++)
                        *(uint*)(o + 32 + quad * 32 + r * 4) = (blk != null ? Unsafe.ReadUnaligned<uint>(blk + 2 + quad * 4) : 0u) ^ 0x80808080u;
                }
            }
    }

    /// <summary>Row <paramref name="row"/> of packed weights as fp32 (the embedding lookup): w·d, as ggml
    /// dequantizes Q8_0.</summary>
    public static void DequantizeRow(byte* packed, int blocks, long row, Span<float> dst)
    {
        long g = row / Group;
        int r = (int)(row % Group);
        for (int b = 0; b < blocks; b++)
        {
            byte* o = packed + (g * blocks + b) * BlockBytes;
            float d = ((float*)o)[r];
            int n = Math.Min(32, dst.Length - b * 32);
            for (int c = 0; c < n; c++) dst[b * 32 + c] = (sbyte)(o[32 + (c >> 2) * 32 + r * 4 + (c & 3)] ^ 0x80) * d;
        }
    }

    /// <summary>Outputs [<paramref name="j0"/>, <paramref name="j1"/>) (<paramref name="j0"/> a multiple
    /// of 16) of every activation row: y[r·outDim + j] = Σ_b fma order as in the class summary.</summary>
    /// <param name="w">packed weights (<see cref="Pack"/>).</param>
    /// <param name="xq">rows × blocks × 32 int8 activations.</param>
    /// <param name="xd">rows × blocks activation scales.</param>
    /// <param name="xc">rows × blocks of -128·Σx per block (the bias correction).</param>
    public static void Range(byte* w, sbyte* xq, float* xd, int* xc, float* y, int rows, int blocks, int outDim, int j0, int j1)
    {
        if (UseAvx2 && UseVnni) Range<VnniSum>(w, xq, xd, xc, y, rows, blocks, outDim, j0, j1);
        else if (UseAvx2) Range<Avx2Sum>(w, xq, xd, xc, y, rows, blocks, outDim, j0, j1);
        else ManagedRange(w, xq, xd, y, rows, blocks, outDim, j0, j1);
    }

    /// <summary>The reference arithmetic, one output at a time.</summary>
    private static void ManagedRange(byte* w, sbyte* xq, float* xd, float* y, int rows, int blocks, int outDim, int j0, int j1)
    {
        for (int j = j0; j < j1; j++)
        {
            long g = j / Group;
            int lane = j % Group;
            for (int r = 0; r < rows; r++)
            {
                sbyte* x = xq + (long)r * blocks * 32;
                float acc = 0;
                for (int b = 0; b < blocks; b++)
                {
                    byte* o = w + (g * blocks + b) * BlockBytes;
                    int sum = 0;
                    for (int c = 0; c < 32; c++) sum += (sbyte)(o[32 + (c >> 2) * 32 + lane * 4 + (c & 3)] ^ 0x80) * x[b * 32 + c];
                    acc = MathF.FusedMultiplyAdd(sum, ((float*)o)[lane] * xd[(long)r * blocks + b], acc);
                }
                y[(long)r * outDim + j] = acc;
            }
        }
    }

    /// <summary>How 4 broadcast activation bytes times 4 bytes of each of 8 weight rows are added to 8 int32 lanes.</summary>
    internal interface IQuadSum
    {
        /// <summary>The lanes' start for a block: the bias correction where the weights stay biased.</summary>
        static abstract Vector256<int> Start(int correction);

        static abstract Vector256<int> Add(Vector256<int> acc, Vector256<byte> biasedW, Vector256<sbyte> x);
    }

    /// <summary>AVX-VNNI: vpdpbusd on the biased (unsigned) weights; the sum starts at -128·Σx.</summary>
    internal readonly struct VnniSum : IQuadSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Start(int correction) => Vector256.Create(correction);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> acc, Vector256<byte> biasedW, Vector256<sbyte> x) =>
            AvxVnni.MultiplyWideningAndAdd(acc, biasedW, x);
    }

    /// <summary>AVX2: the weights unbiased, |w| times x with w's sign (vpmaddubsw, exact: a pair is at
    /// most 2·128·127), pairs to int32 (vpmaddwd).</summary>
    internal readonly struct Avx2Sum : IQuadSum
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Start(int correction) => Vector256<int>.Zero;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> acc, Vector256<byte> biasedW, Vector256<sbyte> x)
        {
            var ws = (biasedW ^ Vector256.Create((byte)0x80)).AsSByte();
            return acc + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Avx2.Abs(ws), Avx2.Sign(x, ws)), Vector256.Create((short)1));
        }
    }

    private static void Range<T>(byte* w, sbyte* xq, float* xd, int* xc, float* y, int rows, int blocks, int outDim, int j0, int j1) where T : struct, IQuadSum
    {
        long groupBytes = (long)blocks * BlockBytes, xStride = (long)blocks * 32;
        float* tmp = stackalloc float[4 * 16];
        for (int j = j0; j < j1; j += 16)
        {
            byte* g = w + j / Group * groupBytes;
            bool whole = j + 16 <= j1;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                float* dst = whole ? y + (long)r * outDim + j : tmp;
                int ld = whole ? outDim : 16;
                Tile4x16<T>(g, groupBytes, xq + r * xStride, xd + (long)r * blocks, xc + (long)r * blocks, blocks, dst, ld);
                if (!whole)
                    for (int i = 0; i < 4; i++)
                        new Span<float>(tmp + i * 16, j1 - j).CopyTo(new Span<float>(y + (long)(r + i) * outDim + j, j1 - j));
            }
            for (; r < rows; r++)
            {
                float* dst = whole ? y + (long)r * outDim + j : tmp;
                Tile1x16<T>(g, groupBytes, xq + r * xStride, xd + (long)r * blocks, xc + (long)r * blocks, blocks, dst);
                if (!whole) new Span<float>(tmp, j1 - j).CopyTo(new Span<float>(y + (long)r * outDim + j, j1 - j));
            }
        }
    }

    /// <summary>How many pairs of groups ahead single-row decode prefetches (0: none; LLMCLUSTER_Q8_PREFETCH).</summary>
    internal static readonly int PrefetchPairs = int.TryParse(Environment.GetEnvironmentVariable("LLMCLUSTER_Q8_PREFETCH"), out var p) ? p : 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Quad(sbyte* x) => Vector256.Create(*(int*)x).AsSByte();

    /// <summary>One activation row against 16 outputs (2 groups): 8 independent sums per block (each
    /// group's quads in pairs), so consecutive vpdpbusd do not wait on each other's results.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x16<T>(byte* g0, long groupBytes, sbyte* x, float* d, int* c, int blocks, float* y) where T : struct, IQuadSum
    {
        byte* g1 = g0 + groupBytes;
        // The pairs of groups are contiguous: fetch the pair PrefetchPairs ahead, 2·288 bytes of it per
        // block (decode streams the weights from memory; the int8 work per line kept the hardware
        // prefetchers behind in the kernels before these).
        byte* ahead = g0 + PrefetchPairs * 2 * groupBytes;
        Vector256<float> a0 = default, a1 = default;
        for (int b = 0; b < blocks; b++)
        {
            if (PrefetchPairs > 0)
            {
                byte* p = ahead + (long)b * 2 * BlockBytes;
                Sse.Prefetch0(p); Sse.Prefetch0(p + 64); Sse.Prefetch0(p + 128); Sse.Prefetch0(p + 192); Sse.Prefetch0(p + 256);
                Sse.Prefetch0(p + 320); Sse.Prefetch0(p + 384); Sse.Prefetch0(p + 448); Sse.Prefetch0(p + 512);
            }
            byte* o0 = g0 + (long)b * BlockBytes + 32, o1 = g1 + (long)b * BlockBytes + 32;
            sbyte* xb = x + b * 32;
            var q0 = Quad(xb); var q1 = Quad(xb + 8); var q2 = Quad(xb + 16); var q3 = Quad(xb + 24);
            var s0 = T.Add(T.Start(c[b]), Vector256.Load(o0), q0);
            var t0 = T.Add(Vector256<int>.Zero, Vector256.Load(o0 + 64), q1);
            var u0 = T.Add(Vector256<int>.Zero, Vector256.Load(o0 + 128), q2);
            var v0 = T.Add(Vector256<int>.Zero, Vector256.Load(o0 + 192), q3);
            var s1 = T.Add(T.Start(c[b]), Vector256.Load(o1), q0);
            var t1 = T.Add(Vector256<int>.Zero, Vector256.Load(o1 + 64), q1);
            var u1 = T.Add(Vector256<int>.Zero, Vector256.Load(o1 + 128), q2);
            var v1 = T.Add(Vector256<int>.Zero, Vector256.Load(o1 + 192), q3);
            q0 = Quad(xb + 4); q1 = Quad(xb + 12); q2 = Quad(xb + 20); q3 = Quad(xb + 28);
            s0 = T.Add(s0, Vector256.Load(o0 + 32), q0);
            t0 = T.Add(t0, Vector256.Load(o0 + 96), q1);
            u0 = T.Add(u0, Vector256.Load(o0 + 160), q2);
            v0 = T.Add(v0, Vector256.Load(o0 + 224), q3);
            s1 = T.Add(s1, Vector256.Load(o1 + 32), q0);
            t1 = T.Add(t1, Vector256.Load(o1 + 96), q1);
            u1 = T.Add(u1, Vector256.Load(o1 + 160), q2);
            v1 = T.Add(v1, Vector256.Load(o1 + 224), q3);
            var dx = Vector256.Create(d[b]);
            a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single((s0 + t0) + (u0 + v0)), Vector256.Load((float*)(o0 - 32)) * dx, a0);
            a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single((s1 + t1) + (u1 + v1)), Vector256.Load((float*)(o1 - 32)) * dx, a1);
        }
        a0.Store(y);
        a1.Store(y + 8);
    }

    /// <summary>4 activation rows against 16 outputs: 8 independent sums per block, each column quad
    /// of a group loaded once for the 4 rows and each activation quad broadcast once for the 2 groups.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x16<T>(byte* g0, long groupBytes, sbyte* x, float* d, int* c, int blocks, float* y, int ld) where T : struct, IQuadSum
    {
        byte* g1 = g0 + groupBytes;
        long xs = (long)blocks * 32;
        sbyte* x0 = x, x1 = x + xs, x2 = x + 2 * xs, x3 = x + 3 * xs;
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        for (int b = 0; b < blocks; b++)
        {
            byte* o0 = g0 + (long)b * BlockBytes + 32, o1 = g1 + (long)b * BlockBytes + 32;
            int xo = b * 32;
            var s00 = T.Start(c[b]); var s01 = s00;
            var s10 = T.Start(c[blocks + b]); var s11 = s10;
            var s20 = T.Start(c[2 * blocks + b]); var s21 = s20;
            var s30 = T.Start(c[3 * blocks + b]); var s31 = s30;
            for (int q = 0; q < 8; q++)
            {
                var w0 = Vector256.Load(o0 + 32 * q); var w1 = Vector256.Load(o1 + 32 * q);
                var xv = Quad(x0 + xo + 4 * q); s00 = T.Add(s00, w0, xv); s01 = T.Add(s01, w1, xv);
                xv = Quad(x1 + xo + 4 * q); s10 = T.Add(s10, w0, xv); s11 = T.Add(s11, w1, xv);
                xv = Quad(x2 + xo + 4 * q); s20 = T.Add(s20, w0, xv); s21 = T.Add(s21, w1, xv);
                xv = Quad(x3 + xo + 4 * q); s30 = T.Add(s30, w0, xv); s31 = T.Add(s31, w1, xv);
            }
            var dw0 = Vector256.Load((float*)(o0 - 32)); var dw1 = Vector256.Load((float*)(o1 - 32));
            var dx = Vector256.Create(d[b]);
            a00 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s00), dw0 * dx, a00);
            a01 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s01), dw1 * dx, a01);
            dx = Vector256.Create(d[blocks + b]);
            a10 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s10), dw0 * dx, a10);
            a11 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s11), dw1 * dx, a11);
            dx = Vector256.Create(d[2 * blocks + b]);
            a20 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s20), dw0 * dx, a20);
            a21 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s21), dw1 * dx, a21);
            dx = Vector256.Create(d[3 * blocks + b]);
            a30 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s30), dw0 * dx, a30);
            a31 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(s31), dw1 * dx, a31);
        }
        a00.Store(y); a01.Store(y + 8); y += ld;
        a10.Store(y); a11.Store(y + 8); y += ld;
        a20.Store(y); a21.Store(y + 8); y += ld;
        a30.Store(y); a31.Store(y + 8);
    }
}
