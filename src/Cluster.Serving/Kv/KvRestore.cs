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
        using var restore = new LayerByLayer(model, policy, maxNewTokens);
        foreach (var b in blocks) restore.Add(handle, b);
        return restore.Finish(handle);
    }

    /// <summary>
    /// Restores blocks one at a time as they arrive: a prefetch follows a put still landing, so each layer
    /// goes into the cache while prefill computes the next ones, instead of all of them once the last has
    /// come. The cache is sized when the first block comes (a later, larger layer grows its own arrays).
    /// Disposing it without <see cref="Finish"/> frees the cache.
    /// </summary>
    public sealed class LayerByLayer(LlamaModel model, KvCompressionPolicy policy, int maxNewTokens) : IDisposable
    {
        private SequenceKvCache? _cache;
        private readonly HashSet<int> _layers = [];

        /// <summary>Restores <paramref name="block"/>; returns the cache layer that now holds exactly its rows,
        /// in its order (what a digest of the block may be bound to: <see cref="KvDigest.Of(KvLayerBlock, int, KvCacheLayer)"/>).</summary>
        public KvCacheLayer Add(KvHandle handle, KvLayerBlock block)
        {
            var c = model.Config;
            if (_cache is null)
            {
                if (handle.Layout.NumLayers != c.Layers || handle.Layout.NumKvHeads != c.KvHeads || handle.Layout.HeadDim != c.HeadDim)
                    throw new RpcException(new Status(StatusCode.FailedPrecondition, "the stored KV's layout does not match this worker's model"));
                int most = block.Positions.Max(x => x.Length);
                _cache = model.CreateCache(Math.Max(most + 1, Math.Min(handle.TokenCount + maxNewTokens, policy.Budget ?? c.MaxPositions)));
            }
            if (!_layers.Add(block.Layer)) throw new RpcException(new Status(StatusCode.Internal, $"the cache manager sent layer {block.Layer} twice"));
            KvCacheSnapshot.Restore(model.Backend, _cache, block);
            return _cache.Layers[block.Layer];
        }

        /// <summary>The restored cache (the caller owns it), once every layer has come.</summary>
        public SequenceKvCache Finish(KvHandle handle)
        {
            if (_cache is null || _layers.Count != model.Config.Layers)
                throw new RpcException(new Status(StatusCode.Internal, $"the cache manager sent {_layers.Count} of the model's {model.Config.Layers} layers"));
            var cache = _cache;
            _cache = null;
            KvCacheSnapshot.SetTokensSeen(cache, handle.TokenCount);
            cache.Policy = policy;
            return cache;
        }

        public void Dispose() => _cache?.Dispose();
    }
}
