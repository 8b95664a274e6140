using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>Blocks fetched from the cache manager, restored into a worker's cache (prefill's next turn,
/// decode's start or restart): the layout must be this model's; the cache gets room for what comes next
/// and is managed by the session's policy from then on.</summary>
public static class KvRestore
{
    /// <param name="maxNewTokens">Tokens the caller may still add (bounded by the policy's budget or the context).</param>
    public static SequenceKvCache ToCache(LlamaModel model, KvHandle handle, IReadOnlyList<KvLayerBlock> blocks, KvCompressionPolicy policy, int maxNewTokens)
    {
        var c = model.Config;
        if (handle.Layout.NumLayers != c.Layers || handle.Layout.NumKvHeads != c.KvHeads || handle.Layout.HeadDim != c.HeadDim)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, "the stored KV's layout does not match this worker's model"));
        int most = blocks.Max(b => b.Positions.Max(x => x.Length));
        var cache = model.CreateCache(Math.Max(most + 1, Math.Min(handle.TokenCount + maxNewTokens, policy.Budget ?? c.MaxPositions)));
        foreach (var b in blocks) KvCacheSnapshot.Restore(model.Backend, cache, b);
        KvCacheSnapshot.SetTokensSeen(cache, handle.TokenCount);
        cache.Policy = policy;
        return cache;
    }
}
