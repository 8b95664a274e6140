using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using LlmCluster.V1;

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
    public static SequenceKvCache FromPrompt(LlamaModel model, ReadOnlySpan<int> prompt, KvCompressionPolicy policy, int capacity)
    {
        var cache = model.CreateCache(Math.Max(capacity, prompt.Length));
        var logits = new float[model.Config.VocabSize];
        KvRoom.Forward(model, prompt, cache, logits);
        PromptKvCompression.Apply(model, policy, cache);
        return cache;
    }

    /// <summary>
    /// A conversation's KV as its earlier turns left it: turn 0 as <see cref="FromPrompt"/>, every later
    /// turn's fed tokens through <see cref="ConversationTurn.Feed"/>, and each turn's decoded tokens one
    /// step each, all under <paramref name="policy"/>. The result has the policy set.
    /// </summary>
    /// <param name="expectedTokens">The history's token count the caller was told; a recipe that adds up
    /// to another count describes another KV and is refused.</param>
    public static SequenceKvCache FromRecipe(LlamaModel model, KvRecipe recipe, KvCompressionPolicy policy, int expectedTokens, int capacity)
    {
        long total = recipe.Turns.Sum(t => (long)t.FedTokenIds.Count + t.DecodedTokenIds.Count);
        if (recipe.Turns.Count == 0 || total != expectedTokens)
            throw new InvalidRequestException($"the history recipe holds {total} tokens in {recipe.Turns.Count} turns; the KV to rebuild has {expectedTokens}");
        var first = recipe.Turns[0];
        var cache = FromPrompt(model, first.FedTokenIds.ToArray(), policy, capacity);
        cache.Policy = policy;
        var logits = new float[model.Config.VocabSize];
        for (int t = 0; t < recipe.Turns.Count; t++)
        {
            var turn = recipe.Turns[t];
            if (t > 0) ConversationTurn.Feed(model, cache, turn.FedTokenIds.ToArray(), turn.MaxTokens, logits);
            foreach (var id in turn.DecodedTokenIds) KvRoom.Forward(model, [id], cache, logits);
        }
        return cache;
    }

    /// <summary>
    /// The KV a turn's prefill stored, for a decode worker that cannot fetch it: the prompt's (turn 0),
    /// or the history's from <paramref name="recipe"/> with this turn's fed tokens on top. The result
    /// has the policy set and room for the turn's output.
    /// </summary>
    /// <param name="prompt">Turn 0: the prompt; a later turn: its fed tokens.</param>
    public static SequenceKvCache ForTurn(LlamaModel model, KvRecipe? recipe, int history, int[] prompt, KvCompressionPolicy policy, int maxNewTokens)
    {
        int capacity = Math.Min(history + prompt.Length + maxNewTokens, policy.Budget ?? model.Config.MaxPositions);
        if (history == 0)
        {
            var cache = FromPrompt(model, prompt, policy, capacity);
            cache.Policy = policy;
            return cache;
        }
        if (recipe is null) throw new InvalidRequestException("a later turn's KV cannot be rebuilt without the history recipe");
        var rebuilt = FromRecipe(model, recipe, policy, history, capacity);
        ConversationTurn.Feed(model, rebuilt, prompt, maxNewTokens, new float[model.Config.VocabSize]);
        return rebuilt;
    }
}
