using Cluster.Engine.Compression;
using Cluster.Engine.Model;

namespace Cluster.Engine.KvCache;

/// <summary>
/// The one place where a sequence's KV cache makes room for tokens about to run: its policy evicts (a
/// bounded one down to its budget less the new tokens) or refuses (dense past the model's context),
/// then the cache grows if it must. Whoever drives the model calls it before each pass; the model's
/// forward pass never compresses, it only checks <see cref="SequenceKvCache.HasRoom"/> (issue 16).
/// </summary>
public static class KvRoom
{
    /// <summary>Makes room in <paramref name="cache"/> for <paramref name="incoming"/> tokens. Idempotent
    /// until the tokens run, so a batch can make room for each sequence first, drop the ones that fail,
    /// and run the rest.</summary>
    /// <exception cref="ContextExceededException">A dense cache would pass the model's context.</exception>
    /// <exception cref="ArgumentException">The tokens alone exceed a bounded policy's budget.</exception>
    public static void Make(LlamaModel model, SequenceKvCache cache, int incoming)
    {
        cache.Policy.BeforeAppend(model, cache, incoming);
        // A bounded cache never grows past its budget: eviction has made the room under it.
        cache.Reserve(incoming, cache.Policy.Budget);
    }

    /// <summary>Makes room for a conversation's next turn: <paramref name="space"/> tokens (its fed tokens and
    /// output) before they arrive, as StreamingLLM's chat demo evicts for space before each round (see
    /// <see cref="KvCompressionPolicy.MakeRoom"/>). Dense evicts nothing; the per-pass <see cref="Make"/>
    /// still runs as the tokens arrive.</summary>
    public static void MakeForTurn(LlamaModel model, SequenceKvCache cache, int space) => cache.Policy.MakeRoom(model, cache, space);

    /// <summary>
    /// <see cref="LlamaModel.Forward"/> with room made first. A bounded policy makes room before each chunk
    /// of at most <see cref="LlamaModel.MaxChunk"/> tokens (it evicts between chunks, so a prompt longer
    /// than its budget streams through it); an unbounded one makes room for all the tokens at once and the
    /// model runs them in its own chunks.
    /// </summary>
    public static void Forward(LlamaModel model, ReadOnlySpan<int> tokens, SequenceKvCache cache, Span<float> logits, bool allLogits = false)
    {
        if (tokens.IsEmpty) throw new ArgumentException("no tokens to run", nameof(tokens));
        int vocab = model.Config.VocabSize;
        if (allLogits && logits.Length < (long)tokens.Length * vocab)
            throw new ArgumentException($"logits buffer holds {logits.Length} floats, needs {(long)tokens.Length * vocab}", nameof(logits));
        int step = cache.Policy.Budget is null ? tokens.Length : model.MaxChunk;
        for (int start = 0; start < tokens.Length; start += step)
        {
            var chunk = tokens.Slice(start, Math.Min(step, tokens.Length - start));
            bool last = start + chunk.Length == tokens.Length;
            Make(model, cache, chunk.Length);
            // Only the last chunk's logits are wanted unless every token's are.
            var rows = allLogits ? logits.Slice(start * vocab, chunk.Length * vocab) : last ? logits : [];
            model.Forward(chunk, cache, rows, allLogits);
        }
    }
}
