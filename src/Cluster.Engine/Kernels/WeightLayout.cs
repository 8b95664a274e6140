namespace Cluster.Engine.Kernels;

/// <summary>Sizes of the weight formats (ggml-common.h: QK8_0 = QK4_0 = 32, QK_K = 256).</summary>
public static class WeightLayout
{
    /// <summary>Elements per block (1 for plain arrays).</summary>
    public static int BlockElements(WeightType t) => t switch
    {
        WeightType.Q8_0 or WeightType.Q4_0 => 32,
        WeightType.Q4_K or WeightType.Q6_K => 256,
        _ => 1,
    };

    /// <summary>Bytes per block.</summary>
    public static int BlockBytes(WeightType t) => t switch
    {
        WeightType.F32 => 4,
        WeightType.F16 or WeightType.BF16 => 2,
        WeightType.Q8_0 => 34,   // fp16 d + 32 int8
        WeightType.Q4_0 => 18,   // fp16 d + 16 bytes of nibbles
        WeightType.Q4_K => 144,  // 2 fp16 + 12 scale bytes + 128 bytes of nibbles
        WeightType.Q6_K => 210,  // 128 ql + 64 qh + 16 int8 scales + fp16 d
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes of one row of <paramref name="columns"/> elements. A row that is not a whole
    /// number of blocks is padded with zeros to the next block (our own Q8_0 rows only: GGUF
    /// requires whole blocks, and such rows are never written to a file).</summary>
    public static long RowBytes(WeightType t, long columns)
    {
        int be = BlockElements(t);
        return (columns + be - 1) / be * BlockBytes(t);
    }

    /// <summary>Bytes a decode step reads per weight element, for bandwidth bounds.</summary>
    public static double BytesPerElement(WeightType t) => (double)BlockBytes(t) / BlockElements(t);

    /// <summary>Parses a --weights value: q8_0, bf16, fp16/f16, fp32/f32 (null or "auto" = as stored).</summary>
    public static WeightType? ParseOption(string? value) => value?.ToLowerInvariant() switch
    {
        null or "" or "auto" or "stored" => null,
        "fp32" or "f32" or "float32" => WeightType.F32,
        "fp16" or "f16" or "float16" => WeightType.F16,
        "bf16" or "bfloat16" => WeightType.BF16,
        "q8_0" or "q8" => WeightType.Q8_0,
        _ => throw new ArgumentException($"--weights '{value}' is not a weight format (q8_0, bf16, fp16, fp32)"),
    };

    /// <summary>Formats the CPU kernels multiply with directly; others are converted at load.</summary>
    public static bool HasKernels(WeightType t) => t is WeightType.F32 or WeightType.F16 or WeightType.BF16 or WeightType.Q8_0;

    public static string Name(WeightType t) => t switch
    {
        WeightType.F32 => "fp32", WeightType.F16 => "fp16", WeightType.BF16 => "bf16",
        _ => t.ToString().ToLowerInvariant(),
    };
}
