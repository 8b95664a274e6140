using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>
/// IEEE half and bfloat16 scalars. Block formats carry one fp16 scale per 32 weights, read in the
/// innermost kernel loop: a 64K-entry table is one load instead of the software conversion
/// (.NET has no scalar F16C intrinsic), and the few scales a model uses stay in cache.
/// </summary>
public static unsafe class Fp16
{
    private static readonly float* Table = Build();

    private static float* Build()
    {
        var t = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int i = 0; i < 65536; i++) t[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort bits) => Table[bits];

    /// <summary>The table itself, for kernels that keep it in a register across their loop (a static
    /// field is reloaded after every store the JIT cannot prove unrelated).</summary>
    internal static float* TablePointer => Table;

    /// <summary>fp32 to fp16, round to nearest even (ggml's GGML_FP32_TO_FP16 and numpy agree).</summary>
    public static ushort FromFloat(float x) => BitConverter.HalfToUInt16Bits((Half)x);

    /// <summary>fp32 to bfloat16, round to nearest even; NaN stays a quiet NaN (as torch and ggml's
    /// ggml_compute_fp32_to_bf16 do).</summary>
    public static ushort ToBf16(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
