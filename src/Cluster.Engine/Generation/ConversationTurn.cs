using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Generation;

/// <summary>
/// The start of a later turn of a conversation on the KV that the earlier turns left: make room per
/// the cache's policy, feed the new tokens, sample the turn's first token. The cluster's prefill
/// worker and the local <see cref="Conversation"/> both run exactly this, so a conversation yields the
/// same tokens wherever it runs. The history is never recomputed: that is StreamingLLM's multi-round
/// chat (Xiao et al. 2023), where the model keeps the dialogue's KV and evicts for space before each
/// round.
/// </summary>
public static class ConversationTurn
{
    /// <summary>
    /// Runs the turn's tokens on <paramref name="seq"/>'s cache (which holds the history under
    /// the conversation's policy) and samples the first token of the turn.
    /// </summary>
    /// <param name="fed">The previous turn's tokens that the cache lacks (after a finished turn its last
    /// generated token, sampled but never run) followed by the new prompt's tokens.</param>
    /// <exception cref="ContextExceededException">A dense cache has no room for the turn.</exception>
    public static GenerationChunk Start(LlamaModel model, SequenceGeneration seq, ReadOnlySpan<int> fed, int maxTokens, TimeSpan elapsed = default)
    {
        Feed(model, seq.Cache, fed, maxTokens, seq.Logits);
        return seq.Step(elapsed);
    }

    /// <summary>
    /// The KV part of <see cref="Start"/>: makes room per the cache's policy for the fed tokens and the
    /// turn's max_tokens, then runs the fed tokens in chunks within the budget. A worker rebuilding a
    /// lost conversation replays earlier turns through this, so their KV comes out as it was.
    /// </summary>
    /// <param name="logits">Receives the last fed token's logits.</param>
    public static void Feed(LlamaModel model, SequenceKvCache cache, ReadOnlySpan<int> fed, int maxTokens, Span<float> logits)
    {
        if (fed.IsEmpty) throw new ArgumentException("a turn feeds at least one token", nameof(fed));
        // The whole turn is admitted or refused up front (a dense conversation cannot grow past the context).
        if (ContextLimit.Refusal(cache.Policy, cache.TokensSeen, fed.Length + maxTokens, model.Config.MaxPositions) is { } why)
            throw new ContextExceededException(why);
        KvRoom.MakeForTurn(model, cache, fed.Length + maxTokens);
        // Chunks never exceed the budget (BeforeAppend refuses a chunk larger than it).
        int chunk = cache.Policy.Budget is int budget ? Math.Max(1, Math.Min(model.MaxChunk, budget / 2)) : fed.Length;
        for (int start = 0; start < fed.Length; start += chunk)
            KvRoom.Forward(model, fed.Slice(start, Math.Min(chunk, fed.Length - start)), cache, logits);
    }
}
