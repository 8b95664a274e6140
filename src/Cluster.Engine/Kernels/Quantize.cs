using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>fp32 rows to the formats weights may be converted to at load time.</summary>
public static unsafe class Quantize
{
    /// <summary>Writes one row of <paramref name="src"/> in <paramref name="type"/> to <paramref name="dst"/>
    /// (<see cref="WeightLayout.RowBytes"/> bytes).</summary>
    public static void Row(WeightType type, ReadOnlySpan<float> src, byte* dst)
    {
        switch (type)
        {
            case WeightType.F32:
                src.CopyTo(new Span<float>(dst, src.Length));
                break;
            case WeightType.F16:
                for (int i = 0; i < src.Length; i++) ((ushort*)dst)[i] = Fp16.FromFloat(src[i]);
                break;
            case WeightType.BF16:
                for (int i = 0; i < src.Length; i++) ((ushort*)dst)[i] = Fp16.ToBf16(src[i]);
                break;
            case WeightType.Q8_0:
                Q8_0(src, dst);
                break;
            default:
                throw new NotSupportedException($"converting weights to {WeightLayout.Name(type)} is not supported (q8_0, bf16, fp16, fp32 are)");
        }
    }

    /// <summary>
    /// ggml's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127, q = roundf(x * (1/d))
    /// (ties away from zero), d stored as fp16. Gives llama-quantize's bytes for the same input.
    /// A short last block is padded with zeros.
    /// </summary>
    private static void Q8_0(ReadOnlySpan<float> src, byte* dst)
    {
        for (int b = 0; b * 32 < src.Length; b++, dst += 34)
        {
            var x = src.Slice(b * 32, Math.Min(32, src.Length - b * 32));
            float amax = 0;
            foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            *(ushort*)dst = Fp16.FromFloat(d);
            var q = (sbyte*)(dst + 2);
            for (int j = 0; j < 32; j++) q[j] = j < x.Length ? (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero) : (sbyte)0;
        }
    }

    /// <summary>
    /// Activations for the int8 kernels: each row of <paramref name="k"/> floats becomes
    /// ceil(k/32) blocks of 32 int8 (zero-padded) with an fp32 scale d = max|x|/127 (kept in fp32,
    /// unlike llama.cpp's fp16: one rounding less). Rounds to nearest even.
    /// </summary>
    public static void ActivationRow(ReadOnlySpan<float> x, sbyte* q, float* scales)
    {
        int blocks = (x.Length + 31) / 32;
        int b = 0;
        if (Avx2.IsSupported && UseVectorActivations)
            fixed (float* xp = x)
                for (; b < x.Length / 32; b++, q += 32) scales[b] = ActivationBlock(xp + b * 32, q);
        for (; b < blocks; b++, q += 32)
        {
            var v = x.Slice(b * 32, Math.Min(32, x.Length - b * 32));
            float amax = TensorPrimitives.MaxMagnitude(v);
            amax = Math.Abs(amax);
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            scales[b] = d;
            for (int j = 0; j < 32; j++) q[j] = j < v.Length ? (sbyte)MathF.Round(v[j] * id) : (sbyte)0;
        }
    }

    /// <summary>Σq of one block of 32 int8 (exact: at most 32·128 in magnitude).</summary>
    internal static int BlockSum(sbyte* q)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            int s = 0;
            for (int i = 0; i < 32; i++) s += q[i];
            return s;
        }
        var (lo, hi) = Vector256.Widen(Vector256.Load(q));
        return Vector256.Sum(lo + hi);
    }

    /// <summary>False forces the scalar loop (tests compare the two).</summary>
    internal static bool UseVectorActivations { get; set; } = true;

    /// <summary>
    /// One whole block of <see cref="ActivationRow"/> in 256-bit vectors, the same bits as the scalar
    /// loop: max |x| (max is exact), the same d and 1/d, x·(1/d) rounded to nearest even by vroundps, then
    /// narrowed (the values are within ±127, so the saturating packs do not clip). The packs interleave
    /// 128-bit halves; one vpermd puts the 8 groups of 4 bytes back in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ActivationBlock(float* x, sbyte* q)
    {
        var v0 = Vector256.Load(x); var v1 = Vector256.Load(x + 8);
        var v2 = Vector256.Load(x + 16); var v3 = Vector256.Load(x + 24);
        var m = Avx.Max(Avx.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Avx.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
        var h = Sse.Max(m.GetLower(), m.GetUpper());
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b01_00_11_10));
        h = Sse.Max(h, Sse.Shuffle(h, h, 0b10_11_00_01));
        float amax = h.ToScalar();
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        var s = Vector256.Create(id);
        var i0 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v0 * s));
        var i1 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v1 * s));
        var i2 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v2 * s));
        var i3 = Avx.ConvertToVector256Int32(Avx.RoundToNearestInteger(v3 * s));
        var packed = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(i0, i1), Avx2.PackSignedSaturate(i2, i3));
        Avx2.PermuteVar8x32(packed.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte().Store(q);
        return d;
    }
}
