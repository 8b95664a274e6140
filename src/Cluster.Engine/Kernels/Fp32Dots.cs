using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Matrix products for decode and batched decode (a few activation rows against the whole weight):
/// y[r, j] = x[r, :] · w[j, :], in fp32 multiply-adds, the weights fp32 or bf16 (widened in registers,
/// see <see cref="IDotRows"/>). Each weight row is read from memory once for all rows, in register
/// tiles of 4 rows by 3 weight rows, with no packed copy of the weight (sgemm packs its operand on every
/// call, which at a handful of rows costs more memory traffic than the product; for bf16 it also needed
/// the tile widened to an fp32 scratch first). Every output is one 8-lane fused multiply-add chain over k
/// followed by the same horizontal sum, whatever the tile it falls in, so a sequence's logits are
/// bit-identical whether it decodes alone or in a batch of any size (batch invariance: the cluster's
/// batched stream equals the local run).
/// </summary>
internal static unsafe class Fp32Dots
{
    /// <summary>Up to this many rows use these kernels; more (prefill) go to sgemm.</summary>
    public const int MaxRows = 32;

    /// <summary>Outputs [j0, j1) of every row of fp32 weights; y has row stride <paramref name="ldc"/>.</summary>
    public static void Run(float* x, float* w, float* y, int rows, int k, int j0, int j1, int ldc) =>
        Run<F32Rows>(x, (byte*)w, y, rows, k, j0, j1, ldc);

    /// <summary>Outputs [j0, j1) of every row, weight rows in the format <typeparamref name="TW"/>.</summary>
    public static void Run<TW>(float* x, byte* w, float* y, int rows, int k, int j0, int j1, int ldc) where TW : IDotRows
    {
        long rb = TW.RowBytes(k);
        int j = j0;
        // One row (single-stream decode): six weight rows at a time keep six FMA chains in flight.
        if (rows == 1)
        {
            long ahead = typeof(TW) == typeof(Bf16Rows) ? Bf16PrefetchGroups * 6 * rb : 0;
            for (; j + 6 <= j1; j += 6) Tile1x6<TW>(x, w + j * rb, y + j, k, rb, ahead);
        }
        for (; j + 3 <= j1; j += 3)
        {
            byte* wj = w + j * rb;
            int r = 0;
            for (; r + 4 <= rows; r += 4) Tile4x3<TW>(x + (long)r * k, wj, y + (long)r * ldc + j, k, ldc, rb);
            for (; r < rows; r++) Tile1x3<TW>(x + (long)r * k, wj, y + (long)r * ldc + j, k, rb);
        }
        for (; j < j1; j++)
            for (int r = 0; r < rows; r++)
                y[(long)r * ldc + j] = Dot<TW>(x + (long)r * k, w + j * rb, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x3<TW>(float* x, byte* w, float* y, int k, int ldc, long rb) where TW : IDotRows
    {
        float* x1 = x + k, x2 = x1 + k, x3 = x2 + k;
        byte* w1 = w + rb, w2 = w1 + rb;
        Vector256<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a30 = default, a31 = default, a32 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            var v0 = TW.Load8(w, kk);
            var v1 = TW.Load8(w1, kk);
            var v2 = TW.Load8(w2, kk);
            var u = Vector256.Load(x + kk);
            a00 = Vector256.FusedMultiplyAdd(u, v0, a00); a01 = Vector256.FusedMultiplyAdd(u, v1, a01); a02 = Vector256.FusedMultiplyAdd(u, v2, a02);
            u = Vector256.Load(x1 + kk);
            a10 = Vector256.FusedMultiplyAdd(u, v0, a10); a11 = Vector256.FusedMultiplyAdd(u, v1, a11); a12 = Vector256.FusedMultiplyAdd(u, v2, a12);
            u = Vector256.Load(x2 + kk);
            a20 = Vector256.FusedMultiplyAdd(u, v0, a20); a21 = Vector256.FusedMultiplyAdd(u, v1, a21); a22 = Vector256.FusedMultiplyAdd(u, v2, a22);
            u = Vector256.Load(x3 + kk);
            a30 = Vector256.FusedMultiplyAdd(u, v0, a30); a31 = Vector256.FusedMultiplyAdd(u, v1, a31); a32 = Vector256.FusedMultiplyAdd(u, v2, a32);
        }
        y[0] = Finish<TW>(a00, x, w, kk, k); y[1] = Finish<TW>(a01, x, w1, kk, k); y[2] = Finish<TW>(a02, x, w2, kk, k);
        y += ldc;
        y[0] = Finish<TW>(a10, x1, w, kk, k); y[1] = Finish<TW>(a11, x1, w1, kk, k); y[2] = Finish<TW>(a12, x1, w2, kk, k);
        y += ldc;
        y[0] = Finish<TW>(a20, x2, w, kk, k); y[1] = Finish<TW>(a21, x2, w1, kk, k); y[2] = Finish<TW>(a22, x2, w2, kk, k);
        y += ldc;
        y[0] = Finish<TW>(a30, x3, w, kk, k); y[1] = Finish<TW>(a31, x3, w1, kk, k); y[2] = Finish<TW>(a32, x3, w2, kk, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x3<TW>(float* x, byte* w, float* y, int k, long rb) where TW : IDotRows
    {
        byte* w1 = w + rb, w2 = w1 + rb;
        Vector256<float> a0 = default, a1 = default, a2 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            var u = Vector256.Load(x + kk);
            a0 = Vector256.FusedMultiplyAdd(u, TW.Load8(w, kk), a0);
            a1 = Vector256.FusedMultiplyAdd(u, TW.Load8(w1, kk), a1);
            a2 = Vector256.FusedMultiplyAdd(u, TW.Load8(w2, kk), a2);
        }
        y[0] = Finish<TW>(a0, x, w, kk, k); y[1] = Finish<TW>(a1, x, w1, kk, k); y[2] = Finish<TW>(a2, x, w2, kk, k);
    }

    /// <summary>How many groups of 6 bf16 rows ahead single-row decode prefetches (0: none). Streaming a
    /// weight larger than the caches (the 576 x 49152 classifier), six rows at a time left the hardware
    /// prefetchers behind: 6.4-7.4 ms against 5.0-5.4 for one row at a time, 5.0-5.2 with this.</summary>
    internal static readonly int Bf16PrefetchGroups = int.TryParse(Environment.GetEnvironmentVariable("LLMCLUSTER_BF16_PREFETCH"), out var g) ? g : 4;

    /// <summary>Six weight rows against one activation row; with <paramref name="ahead"/> &gt; 0 the six rows
    /// that many bytes further on are prefetched as these are read (the rows of a group are contiguous,
    /// so a step of 8 weights per row consumes 6 · 8 weights' bytes of the group ahead).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x6<TW>(float* x, byte* w, float* y, int k, long rb, long ahead) where TW : IDotRows
    {
        byte* pf = w + ahead;
        long step = 6 * TW.RowBytes(8);
        byte* w1 = w + rb, w2 = w1 + rb, w3 = w2 + rb, w4 = w3 + rb, w5 = w4 + rb;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            if (ahead != 0)
            {
                // Two lines per step cover 96 bytes (bf16) without a gap; a third for 192 (fp32).
                Sse.Prefetch0(pf); Sse.Prefetch0(pf + 64);
                if (step > 128) Sse.Prefetch0(pf + 128);
                pf += step;
            }
            var u = Vector256.Load(x + kk);
            a0 = Vector256.FusedMultiplyAdd(u, TW.Load8(w, kk), a0);
            a1 = Vector256.FusedMultiplyAdd(u, TW.Load8(w1, kk), a1);
            a2 = Vector256.FusedMultiplyAdd(u, TW.Load8(w2, kk), a2);
            a3 = Vector256.FusedMultiplyAdd(u, TW.Load8(w3, kk), a3);
            a4 = Vector256.FusedMultiplyAdd(u, TW.Load8(w4, kk), a4);
            a5 = Vector256.FusedMultiplyAdd(u, TW.Load8(w5, kk), a5);
        }
        y[0] = Finish<TW>(a0, x, w, kk, k); y[1] = Finish<TW>(a1, x, w1, kk, k); y[2] = Finish<TW>(a2, x, w2, kk, k);
        y[3] = Finish<TW>(a3, x, w3, kk, k); y[4] = Finish<TW>(a4, x, w4, kk, k); y[5] = Finish<TW>(a5, x, w5, kk, k);
    }

    private static float Dot<TW>(float* x, byte* w, int k) where TW : IDotRows
    {
        Vector256<float> a = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(x + kk), TW.Load8(w, kk), a);
        return Finish<TW>(a, x, w, kk, k);
    }

    /// <summary>The one way every output ends: lanes summed in a fixed order, then the k % 8 tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish<TW>(Vector256<float> a, float* x, byte* w, int kk, int k) where TW : IDotRows
    {
        var h = a.GetLower() + a.GetUpper();
        float s = (h.GetElement(0) + h.GetElement(2)) + (h.GetElement(1) + h.GetElement(3));
        for (; kk < k; kk++) s = MathF.FusedMultiplyAdd(x[kk], TW.At(w, kk), s);
        return s;
    }
}
