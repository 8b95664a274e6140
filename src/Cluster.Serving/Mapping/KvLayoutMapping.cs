using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Serving.Mapping;

public static class KvLayoutMapping
{
    /// <summary>The layout of a model's KV cache: keys after RoPE in the half-split layout, with the RoPE
    /// frequencies so that a holder of the blocks can re-rotate keys, elements in <paramref name="precision"/>.</summary>
    public static KvLayout For(LlamaModel model, KvPrecision precision = KvPrecision.Fp32) =>
        For(model.Config.Layers, model.Config.KvHeads, model.Config.HeadDim, model.Rope, precision);

    public static KvLayout For(int layers, int kvHeads, int headDim, RopeTable rope, KvPrecision precision = KvPrecision.Fp32) => new()
    {
        NumLayers = layers,
        NumKvHeads = kvHeads,
        HeadDim = headDim,
        Dtype = ToWire(precision),
        KeysPostRope = true,
        RopeInverseFrequencies = { rope.InverseFrequencies },
    };

    /// <summary>The RoPE table a layout describes (half-split pairs, as the cache stores keys).</summary>
    public static RopeTable Rope(KvLayout layout) => new(layout.RopeInverseFrequencies.ToArray(), RopeLayout.Halves);

    /// <summary>The element type of a layout's block data. Unset is fp32 (what every writer sent before
    /// the field was read); a value this build does not know is INVALID_ARGUMENT, never data misread.</summary>
    public static KvPrecision Precision(KvLayout layout) => layout.Dtype switch
    {
        KvDtype.Unspecified or KvDtype.F32 => KvPrecision.Fp32,
        KvDtype.F16 => KvPrecision.Fp16,
        KvDtype.Bf16 => KvPrecision.Bf16,
        var d => throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV layout dtype {d} is not one this build reads (fp32, fp16, bf16)")),
    };

    public static KvDtype ToWire(KvPrecision precision) => precision switch
    {
        KvPrecision.Fp16 => KvDtype.F16,
        KvPrecision.Bf16 => KvDtype.Bf16,
        _ => KvDtype.F32,
    };
}
