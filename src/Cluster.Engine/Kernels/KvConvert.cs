using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Cluster.Engine.KvCache;

namespace Cluster.Engine.Kernels;

/// <summary>
/// fp32 KV to and from its <see cref="KvPrecision"/> bytes (little-endian), written straight into the
/// destination (a message buffer, a block's arrays), so a conversion costs no more passes than the
/// copy it replaces. Rounding is to nearest even, as <see cref="Fp16"/>'s scalars (and numpy, torch)
/// do: fp16 through <see cref="TensorPrimitives.ConvertToHalf"/> (IEEE conversion, vectorised), bf16
/// with the same integer trick as <see cref="Fp16.ToBf16"/>, eight lanes at a time.
/// </summary>
public static class KvConvert
{
    /// <summary>Writes <paramref name="src"/> as <paramref name="p"/> into <paramref name="dst"/>
    /// (exactly <c>src.Length * p.Bytes()</c> bytes).</summary>
    public static void Encode(ReadOnlySpan<float> src, Span<byte> dst, KvPrecision p)
    {
        if (dst.Length != src.Length * p.Bytes()) throw new ArgumentException($"{src.Length} floats as {p.Name()} need {src.Length * p.Bytes()} bytes, the destination has {dst.Length}", nameof(dst));
        switch (p)
        {
            case KvPrecision.Fp32: MemoryMarshal.AsBytes(src).CopyTo(dst); break;
            case KvPrecision.Fp16: TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst)); break;
            default: ToBf16(src, MemoryMarshal.Cast<byte, ushort>(dst)); break;
        }
    }

    /// <summary>Reads <paramref name="src"/> (<paramref name="p"/> elements) into <paramref name="dst"/>
    /// (exactly <c>src.Length / p.Bytes()</c> floats).</summary>
    public static void Decode(ReadOnlySpan<byte> src, Span<float> dst, KvPrecision p)
    {
        if (src.Length != dst.Length * p.Bytes()) throw new ArgumentException($"{src.Length} bytes of {p.Name()} are not {dst.Length} floats", nameof(src));
        switch (p)
        {
            case KvPrecision.Fp32: src.CopyTo(MemoryMarshal.AsBytes(dst)); break;
            case KvPrecision.Fp16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst); break;
            default: FromBf16(MemoryMarshal.Cast<byte, ushort>(src), dst); break;
        }
    }

    /// <summary>Rounds <paramref name="x"/> in place to the values <paramref name="p"/> can hold (what a
    /// block sent and read back in that precision holds): the KV a reader of such blocks computes with.</summary>
    public static void Round(Span<float> x, KvPrecision p)
    {
        if (p == KvPrecision.Fp32) return;
        Span<byte> scratch = stackalloc byte[1024 * sizeof(ushort)];
        for (int i = 0; i < x.Length; i += 1024)
        {
            var part = x.Slice(i, Math.Min(1024, x.Length - i));
            var bytes = scratch[..(part.Length * sizeof(ushort))];
            Encode(part, bytes, p);
            Decode(bytes, part, p);
        }
    }

    // Both loops are JIT-compiled optimized at once: a worker's first transfers would otherwise run them
    // as unoptimized tier-0 code, where every vector operation is a call (several times slower).
    /// <summary>fp32 to bf16, round to nearest even; NaN stays a quiet NaN (as <see cref="Fp16.ToBf16"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToBf16(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bits = MemoryMarshal.Cast<float, uint>(src);
            var one = Vector256.Create(1u);
            var bias = Vector256.Create(0x7fffu);
            var abs = Vector256.Create(0x7fffffffu);
            var inf = Vector256.Create(0x7f800000u);
            var quiet = Vector256.Create(64u);
            Vector256<uint> Convert(Vector256<uint> u)
            {
                var rounded = (u + bias + ((u >> 16) & one)) >> 16;
                var nan = Vector256.GreaterThan(u & abs, inf);
                return Vector256.ConditionalSelect(nan, (u >> 16) | quiet, rounded);
            }
            for (; i + 16 <= src.Length; i += 16)
            {
                var lo = Convert(Vector256.Create(bits.Slice(i, 8)));
                var hi = Convert(Vector256.Create(bits.Slice(i + 8, 8)));
                Vector256.Narrow(lo, hi).CopyTo(dst.Slice(i, 16));
            }
        }
        for (; i < src.Length; i++) dst[i] = Fp16.ToBf16(src[i]);
    }

    /// <summary>bf16 to fp32: exact (a shift).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void FromBf16(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bits = MemoryMarshal.Cast<float, uint>(dst);
            for (; i + 16 <= src.Length; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Create(src.Slice(i, 16)));
                (lo << 16).CopyTo(bits.Slice(i, 8));
                (hi << 16).CopyTo(bits.Slice(i + 8, 8));
            }
        }
        for (; i < src.Length; i++) dst[i] = Fp16.FromBf16(src[i]);
    }
}
