using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>
/// One stored row to fp32, following ggml-quants.c's dequantize_row_* (the same float operations
/// in the same order as llama.cpp's gguf-py reader, so the results are equal, not just close).
/// </summary>
public static unsafe class Dequantize
{
    public static void Row(WeightType type, byte* src, Span<float> dst)
    {
        switch (type)
        {
            case WeightType.F32:
                new ReadOnlySpan<float>(src, dst.Length).CopyTo(dst);
                break;
            case WeightType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, dst.Length), dst);
                break;
            case WeightType.BF16:
                // bf16 is the top half of an fp32: widen by shifting the bits left 16.
                Bf16(src, dst);
                break;
            case WeightType.Q8_0: Q8_0(src, dst); break;
            case WeightType.Q4_0: Q4_0(src, dst); break;
            case WeightType.Q4_K: Q4_K(src, dst); break;
            case WeightType.Q6_K: Q6_K(src, dst); break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    /// <summary>Prefill dequantizes whole weight tiles for sgemm: the scalar loops below cost a quarter of
    /// the product's time for Q8_0 (one convert and multiply per weight); 8 lanes at a time give the
    /// same bits (an exact widening, then the same single multiply per weight).</summary>
    internal static bool UseVectors = Avx2.IsSupported;

    private static void Bf16(byte* src, Span<float> dst)
    {
        var s = (ushort*)src;
        int i = 0;
        fixed (float* dp = dst)
        {
            var d = (uint*)dp;
            if (UseVectors)
                for (; i + 8 <= dst.Length; i += 8)
                    Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(s + i), 16).AsUInt32().Store(d + i);
            for (; i < dst.Length; i++) d[i] = (uint)s[i] << 16;
        }
    }

    /// <summary>block_q8_0 {fp16 d; int8 qs[32]}: x = d * q. A short last block (our padded rows) is cut.</summary>
    private static void Q8_0(byte* src, Span<float> dst)
    {
        int b = 0;
        if (UseVectors)
            fixed (float* dp = dst)
                for (; (b + 1) * 32 <= dst.Length; b++, src += 34)
                {
                    var d = Vector256.Create(Fp16.ToFloat(*(ushort*)src));
                    var q = (sbyte*)(src + 2);
                    float* o = dp + b * 32;
                    for (int j = 0; j < 32; j += 8)
                        (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(q + j)) * d).Store(o + j);
                }
        for (; b * 32 < dst.Length; b++, src += 34)
        {
            float d = Fp16.ToFloat(*(ushort*)src);
            var q = (sbyte*)(src + 2);
            int n = Math.Min(32, dst.Length - b * 32);
            for (int j = 0; j < n; j++) dst[b * 32 + j] = d * q[j];
        }
    }

    /// <summary>block_q4_0 {fp16 d; uint8 qs[16]}: element j is the low nibble of qs[j], element
    /// j+16 the high one; x = d * (q - 8).</summary>
    private static void Q4_0(byte* src, Span<float> dst)
    {
        for (int b = 0; b * 32 < dst.Length; b++, src += 18)
        {
            float d = Fp16.ToFloat(*(ushort*)src);
            byte* qs = src + 2;
            for (int j = 0; j < 16; j++)
            {
                dst[b * 32 + j] = d * ((qs[j] & 0x0F) - 8);
                dst[b * 32 + j + 16] = d * ((qs[j] >> 4) - 8);
            }
        }
    }

    /// <summary>block_q4_K {fp16 d, dmin; uint8 scales[12]; uint8 qs[128]}: eight sub-blocks of 32
    /// with 6-bit scale sc and min m each; x = d*sc * q - dmin*m (dequantize_row_q4_K).</summary>
    private static void Q4_K(byte* src, Span<float> dst)
    {
        for (int b = 0; b * 256 < dst.Length; b++, src += 144)
        {
            float d = Fp16.ToFloat(*(ushort*)src), min = Fp16.ToFloat(*(ushort*)(src + 2));
            byte* scales = src + 4, q = src + 16;
            int y = b * 256;
            for (int j = 0, sub = 0; j < 256; j += 64, sub += 2, q += 32)
            {
                ScaleMinK4(sub, scales, out var sc, out var m);
                float d1 = d * sc, m1 = min * m;
                ScaleMinK4(sub + 1, scales, out sc, out m);
                float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; l++) dst[y++] = d1 * (q[l] & 0xF) - m1;
                for (int l = 0; l < 32; l++) dst[y++] = d2 * (q[l] >> 4) - m2;
            }
        }
    }

    /// <summary>get_scale_min_k4: the 6-bit scale and min of sub-block j packed in 12 bytes.</summary>
    private static void ScaleMinK4(int j, byte* q, out byte sc, out byte m)
    {
        if (j < 4)
        {
            sc = (byte)(q[j] & 63);
            m = (byte)(q[j + 4] & 63);
        }
        else
        {
            sc = (byte)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
            m = (byte)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
        }
    }

    /// <summary>block_q6_K {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d}: 6-bit q from a
    /// nibble of ql and two bits of qh, minus 32; x = d * scale * q (dequantize_row_q6_K).</summary>
    private static void Q6_K(byte* src, Span<float> dst)
    {
        for (int b = 0; b * 256 < dst.Length; b++, src += 210)
        {
            byte* ql = src, qh = src + 128;
            sbyte* sc = (sbyte*)(src + 192);
            float d = Fp16.ToFloat(*(ushort*)(src + 208));
            int y = b * 256;
            for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
            {
                for (int l = 0; l < 32; l++)
                {
                    int s = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    dst[y + l] = d * sc[s] * q1;
                    dst[y + l + 32] = d * sc[s + 2] * q2;
                    dst[y + l + 64] = d * sc[s + 4] * q3;
                    dst[y + l + 96] = d * sc[s + 6] * q4;
                }
            }
        }
    }
}
