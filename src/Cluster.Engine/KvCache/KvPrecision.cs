namespace Cluster.Engine.KvCache;

/// <summary>
/// Element type of KV as it travels and as the cache manager stores it (issue 17). Workers compute
/// with fp32 KV; a 16-bit precision halves the bytes moved and stored at the cost of rounding
/// (bf16: fp32's range, 8 bits of mantissa; fp16: 11 bits, range up to 65504).
/// </summary>
public enum KvPrecision
{
    Fp32,
    Fp16,
    Bf16,
}

public static class KvPrecisions
{
    /// <summary>Bytes per element.</summary>
    public static int Bytes(this KvPrecision p) => p == KvPrecision.Fp32 ? sizeof(float) : sizeof(ushort);

    public static string Name(this KvPrecision p) => p switch
    {
        KvPrecision.Fp16 => "fp16",
        KvPrecision.Bf16 => "bf16",
        _ => "fp32",
    };

    /// <summary>Parses a --kv-dtype value: fp32/f32, bf16/bfloat16, fp16/f16/half; throws <see cref="ArgumentException"/> otherwise.</summary>
    public static KvPrecision Parse(string? value) => value?.ToLowerInvariant() switch
    {
        null or "" or "fp32" or "f32" or "float32" => KvPrecision.Fp32,
        "bf16" or "bfloat16" => KvPrecision.Bf16,
        "fp16" or "f16" or "float16" or "half" => KvPrecision.Fp16,
        _ => throw new ArgumentException($"--kv-dtype '{value}' is not a KV precision (fp32, bf16, fp16)"),
    };
}
