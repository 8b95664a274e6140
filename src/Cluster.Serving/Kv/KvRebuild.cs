using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Mapping;

namespace Cluster.Serving.Kv;

/// <summary>
/// The cache manager is a cache, not the source of truth (DESIGN.md): when it has lost a session's KV
/// (restarted, evicted, expired) or cannot be reached, a decode worker rebuilds the KV that prefill
/// stored from the prompt, exactly as it was made: a dense forward pass over the prompt, then the
/// policy's bulk compression (<see cref="PromptKvCompression"/>, what prefill applies before sending). The stream
/// then continues like a restart from that first version: the generated tokens are fed back through
/// the policy step by step, as the original stream fed them, so the tokens stay identical.
/// </summary>
public static class KvRebuild
{
    /// <summary>The prompt's KV as the cache manager held it after prefill (version 1).</summary>
    /// <param name="capacity">Slots per head to allocate (at least the prompt's length).</param>
    public static SequenceKvCache FromPrompt(LlamaModel model, ReadOnlySpan<int> prompt, KvCompressionPolicy? policy, int capacity)
    {
        var cache = model.CreateCache(Math.Max(capacity, prompt.Length));
        var logits = new float[model.Config.VocabSize];
        model.Forward(prompt, cache, logits);
        PromptKvCompression.Apply(model, policy, cache);
        return cache;
    }
}
