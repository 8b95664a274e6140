namespace Cluster.Engine.Kernels;

/// <summary>
/// Element formats a weight tensor may be kept in. F32/F16/BF16 are plain arrays; the others are
/// ggml's block formats (ggml-common.h), stored row by row exactly as in a GGUF file. Compute
/// (activations, accumulators) is always fp32.
/// </summary>
public enum WeightType
{
    F32,
    F16,
    BF16,

    /// <summary>Blocks of 32: fp16 scale d, 32 int8 q; x = d * q (ggml block_q8_0, 34 bytes).</summary>
    Q8_0,

    /// <summary>Blocks of 32: fp16 scale d, 16 bytes of 4-bit q; x = d * (q - 8) (block_q4_0, 18 bytes). Read only.</summary>
    Q4_0,

    /// <summary>Super-blocks of 256: fp16 d and dmin, 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit q (block_q4_K, 144 bytes). Read only.</summary>
    Q4_K,

    /// <summary>Super-blocks of 256: 4+2-bit q, 16 int8 scales, fp16 d (block_q6_K, 210 bytes). Read only.</summary>
    Q6_K,
}

/// <summary>
/// A read-only view of one weight tensor in host memory (a memory-mapped file or a buffer the loader
/// owns), in its stored format. Rows are <see cref="Columns"/> elements long (the innermost
/// dimension); block formats store each row as whole blocks. The owner of the memory must outlive
/// every tensor made from it.
/// </summary>
public readonly unsafe struct WeightData
{
    /// <param name="columns">Row length (innermost dimension); 0 means one row of all elements.</param>
    public WeightData(byte* pointer, long elements, WeightType type, long columns = 0)
    {
        Pointer = pointer;
        Elements = elements;
        Type = type;
        Columns = columns > 0 ? columns : elements;
        if (Elements % Columns != 0) throw new ArgumentException($"{elements} elements are not whole rows of {Columns}");
    }

    public byte* Pointer { get; }
    public long Elements { get; }
    public WeightType Type { get; }
    public long Columns { get; }
    public long Rows => Elements / Columns;

    public long RowBytes => WeightLayout.RowBytes(Type, Columns);
    public long ByteLength => Rows * RowBytes;

    /// <summary>Row <paramref name="row"/> as fp32 into <paramref name="destination"/> (length <see cref="Columns"/>).</summary>
    public void CopyRowToFloat32(long row, Span<float> destination) =>
        Dequantize.Row(Type, Pointer + row * RowBytes, destination[..checked((int)Columns)]);

    /// <summary>Converts to fp32 into <paramref name="destination"/> (length = <see cref="Elements"/>).</summary>
    public void CopyToFloat32(Span<float> destination)
    {
        int cols = checked((int)Columns);
        for (long r = 0; r < Rows; r++) CopyRowToFloat32(r, destination.Slice(checked((int)(r * cols)), cols));
    }

    /// <summary>Wraps fp32 host memory (e.g. a pinned or native buffer) as weight data.</summary>
    public static WeightData FromFloats(float* pointer, long elements, long columns = 0) => new((byte*)pointer, elements, WeightType.F32, columns);
}
