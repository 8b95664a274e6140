using Cluster.Engine.Model;
using LlmCluster.V1;

namespace Cluster.Serving.Mapping;

public static class KvLayoutMapping
{
    /// <summary>The layout of a model's KV cache: fp32, keys after RoPE in the half-split layout,
    /// with the RoPE frequencies so that a holder of the blocks can re-rotate keys.</summary>
    public static KvLayout For(LlamaModel model) => For(model.Config.Layers, model.Config.KvHeads, model.Config.HeadDim, model.Rope);

    public static KvLayout For(int layers, int kvHeads, int headDim, RopeTable rope) => new()
    {
        NumLayers = layers,
        NumKvHeads = kvHeads,
        HeadDim = headDim,
        Dtype = KvDtype.F32,
        KeysPostRope = true,
        RopeInverseFrequencies = { rope.InverseFrequencies },
    };

    /// <summary>The RoPE table a layout describes (half-split pairs, as the cache stores keys).</summary>
    public static RopeTable Rope(KvLayout layout) => new(layout.RopeInverseFrequencies.ToArray(), RopeLayout.Halves);
}
