using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Cluster.Engine.Kernels;

/// <summary>How <see cref="Fp32Dots"/> reads a weight row: eight weights at a time as fp32 lanes, and
/// one weight (the k % 8 tail). A struct per format, so the JIT compiles each tile once per format with
/// the load inlined: no call or branch per vector.</summary>
internal unsafe interface IDotRows
{
    /// <summary>Bytes of one row of <paramref name="k"/> weights.</summary>
    static abstract long RowBytes(int k);

    /// <summary>Weights [i, i + 8) of the row as fp32.</summary>
    static abstract Vector256<float> Load8(byte* row, int i);

    /// <summary>Weight i of the row as fp32.</summary>
    static abstract float At(byte* row, int i);
}

/// <summary>fp32 rows, read as they are.</summary>
internal readonly unsafe struct F32Rows : IDotRows
{
    public static long RowBytes(int k) => 4L * k;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int i) => Vector256.Load((float*)row + i);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => ((float*)row)[i];
}

/// <summary>bf16 rows widened exactly: a bf16 value is the top half of its fp32, so zero-extending
/// to 32 bits (vpmovzxwd straight from memory) and shifting left by 16 gives the fp32 bits.</summary>
internal readonly unsafe struct Bf16Rows : IDotRows
{
    public static long RowBytes(int k) => 2L * k;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int i)
    {
        ushort* p = (ushort*)row + i;
        if (Avx2.IsSupported) return Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 16).AsSingle();
        var h = Vector128.Load(p);
        return (Vector256.Create(Vector128.WidenLower(h), Vector128.WidenUpper(h)) << 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float At(byte* row, int i) => Fp16.FromBf16(((ushort*)row)[i]);
}
