using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Cluster.Engine.Kernels;

/// <summary>
/// fp32 matrix products for decode and batched decode (a few activation rows against the whole
/// weight): y[r, j] = x[r, :] · w[j, :]. Each weight row is read from memory once for all rows, in
/// register tiles of 4 rows by 3 weight rows, with no packed copy of the weight (sgemm packs its
/// operand on every call, which at a handful of rows costs more memory traffic than the product).
/// Every output is one 8-lane fused multiply-add chain over k followed by the same horizontal sum,
/// whatever the tile it falls in, so a sequence's logits are bit-identical whether it decodes alone
/// or in a batch of any size (batch invariance: the cluster's batched stream equals the local run).
/// </summary>
internal static unsafe class Fp32Dots
{
    /// <summary>Up to this many rows use these kernels; more (prefill) go to sgemm.</summary>
    public const int MaxRows = 32;

    /// <summary>Outputs [j0, j1) of every row; y has row stride <paramref name="ldc"/>.</summary>
    public static void Run(float* x, float* w, float* y, int rows, int k, int j0, int j1, int ldc)
    {
        int j = j0;
        // One row (single-stream decode): six weight rows at a time keep six FMA chains in flight.
        if (rows == 1)
            for (; j + 6 <= j1; j += 6) Tile1x6(x, w + (long)j * k, y + j, k);
        for (; j + 3 <= j1; j += 3)
        {
            float* wj = w + (long)j * k;
            int r = 0;
            for (; r + 4 <= rows; r += 4) Tile4x3(x + (long)r * k, wj, y + (long)r * ldc + j, k, ldc);
            for (; r < rows; r++) Tile1x3(x + (long)r * k, wj, y + (long)r * ldc + j, k);
        }
        for (; j < j1; j++)
            for (int r = 0; r < rows; r++)
                y[(long)r * ldc + j] = Dot(x + (long)r * k, w + (long)j * k, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x3(float* x, float* w, float* y, int k, int ldc)
    {
        float* x1 = x + k, x2 = x1 + k, x3 = x2 + k, w1 = w + k, w2 = w1 + k;
        Vector256<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a30 = default, a31 = default, a32 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            var v0 = Vector256.Load(w + kk);
            var v1 = Vector256.Load(w1 + kk);
            var v2 = Vector256.Load(w2 + kk);
            var u = Vector256.Load(x + kk);
            a00 = Vector256.FusedMultiplyAdd(u, v0, a00); a01 = Vector256.FusedMultiplyAdd(u, v1, a01); a02 = Vector256.FusedMultiplyAdd(u, v2, a02);
            u = Vector256.Load(x1 + kk);
            a10 = Vector256.FusedMultiplyAdd(u, v0, a10); a11 = Vector256.FusedMultiplyAdd(u, v1, a11); a12 = Vector256.FusedMultiplyAdd(u, v2, a12);
            u = Vector256.Load(x2 + kk);
            a20 = Vector256.FusedMultiplyAdd(u, v0, a20); a21 = Vector256.FusedMultiplyAdd(u, v1, a21); a22 = Vector256.FusedMultiplyAdd(u, v2, a22);
            u = Vector256.Load(x3 + kk);
            a30 = Vector256.FusedMultiplyAdd(u, v0, a30); a31 = Vector256.FusedMultiplyAdd(u, v1, a31); a32 = Vector256.FusedMultiplyAdd(u, v2, a32);
        }
        y[0] = Finish(a00, x, w, kk, k); y[1] = Finish(a01, x, w1, kk, k); y[2] = Finish(a02, x, w2, kk, k);
        y += ldc;
        y[0] = Finish(a10, x1, w, kk, k); y[1] = Finish(a11, x1, w1, kk, k); y[2] = Finish(a12, x1, w2, kk, k);
        y += ldc;
        y[0] = Finish(a20, x2, w, kk, k); y[1] = Finish(a21, x2, w1, kk, k); y[2] = Finish(a22, x2, w2, kk, k);
        y += ldc;
        y[0] = Finish(a30, x3, w, kk, k); y[1] = Finish(a31, x3, w1, kk, k); y[2] = Finish(a32, x3, w2, kk, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x3(float* x, float* w, float* y, int k)
    {
        float* w1 = w + k, w2 = w1 + k;
        Vector256<float> a0 = default, a1 = default, a2 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            var u = Vector256.Load(x + kk);
            a0 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w + kk), a0);
            a1 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w1 + kk), a1);
            a2 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w2 + kk), a2);
        }
        y[0] = Finish(a0, x, w, kk, k); y[1] = Finish(a1, x, w1, kk, k); y[2] = Finish(a2, x, w2, kk, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x6(float* x, float* w, float* y, int k)
    {
        float* w1 = w + k, w2 = w1 + k, w3 = w2 + k, w4 = w3 + k, w5 = w4 + k;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8)
        {
            var u = Vector256.Load(x + kk);
            a0 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w + kk), a0);
            a1 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w1 + kk), a1);
            a2 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w2 + kk), a2);
            a3 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w3 + kk), a3);
            a4 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w4 + kk), a4);
            a5 = Vector256.FusedMultiplyAdd(u, Vector256.Load(w5 + kk), a5);
        }
        y[0] = Finish(a0, x, w, kk, k); y[1] = Finish(a1, x, w1, kk, k); y[2] = Finish(a2, x, w2, kk, k);
        y[3] = Finish(a3, x, w3, kk, k); y[4] = Finish(a4, x, w4, kk, k); y[5] = Finish(a5, x, w5, kk, k);
    }

    private static float Dot(float* x, float* w, int k)
    {
        Vector256<float> a = default;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(x + kk), Vector256.Load(w + kk), a);
        return Finish(a, x, w, kk, k);
    }

    /// <summary>The one way every output ends: lanes summed in a fixed order, then the k % 8 tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(Vector256<float> a, float* x, float* w, int kk, int k)
    {
        var h = a.GetLower() + a.GetUpper();
        float s = (h.GetElement(0) + h.GetElement(2)) + (h.GetElement(1) + h.GetElement(3));
        for (; kk < k; kk++) s = MathF.FusedMultiplyAdd(x[kk], w[kk], s);
        return s;
    }
}
