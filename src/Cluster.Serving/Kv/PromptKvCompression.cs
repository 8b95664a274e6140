using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Mapping;

namespace Cluster.Serving.Kv;

/// <summary>
/// A prompt's dense KV compressed to the session's policy, as every holder of a first version makes
/// it: the prefill worker before it sends (so only the kept tokens travel), a decode worker that
/// rebuilds a lost session, and the cache manager for a put that arrives over budget. All three use
/// the RoPE table of the KV layout (what the cache manager, which holds no model, has), so the kept
/// keys are re-rotated identically wherever the compression ran.
/// </summary>
public static class PromptKvCompression
{
    public static void Apply(LlamaModel model, KvCompressionPolicy policy, SequenceKvCache cache) =>
        policy.Compress(model.Backend, KvLayoutMapping.Rope(KvLayoutMapping.For(model)), cache);
}
