using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Scheduling;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Generation;

/// <summary>
/// A multi-turn conversation in one process, the reference for what the cluster does with a session:
/// the first turn is prefilled densely and compressed to the budget at once (as the cache manager does
/// on ingest); every later turn starts with <see cref="ConversationTurn.Start"/> on the KV the last one
/// left; each turn then decodes with per-step eviction, in a <see cref="ContinuousBatcher"/> as on a
/// decode worker. Between turns the cache holds everything but
/// the last generated token, which the next turn feeds first (as the cluster's final checkpoint).
/// Not thread-safe, like the model.
/// </summary>
public sealed class Conversation(LlamaModel model, KvCompressionPolicy policy, ITokenizer? tokenizer = null) : IDisposable
{
    private SequenceKvCache? _cache;
    private int _last = -1;
    private ContinuousBatcher? _batch;

    /// <summary>Tokens the KV has seen so far (original positions; the evicted ones included).</summary>
    public int TokensSeen => _cache?.TokensSeen ?? 0;

    /// <summary>Kept slots per head.</summary>
    public int Kept => _cache?.Length ?? 0;

    /// <summary>Runs one turn to its end and returns its chunks.</summary>
    /// <param name="prompt">The turn's tokens (with BOS on the first turn only).</param>
    /// <param name="p">Sampling of this turn, seed resolved.</param>
    public List<GenerationChunk> Turn(IReadOnlyList<int> prompt, SamplingParameters p)
    {
        if (p.Seed is null) throw new ArgumentException("resolve the seed first", nameof(p));
        var c = model.Config;
        _batch ??= new ContinuousBatcher(model, 1);
        SequenceGeneration seq;
        if (_cache is null)
        {
            var cache = _cache = model.CreateCache(Math.Min(prompt.Count + p.MaxTokens, c.MaxPositions));
            seq = new SequenceGeneration(c, p, tokenizer, prompt, cache, ownsCache: false);
            Exclusive(() =>
            {
                KvRoom.Forward(model, prompt.ToArray(), cache, seq.Logits);
                cache.Policy = policy;
                policy.Compress(model, cache);
            });
        }
        else
        {
            int[] fed = [_last, .. prompt];
            seq = new SequenceGeneration(c, p, tokenizer, fed, _cache, ownsCache: false);
            Exclusive(() => ConversationTurn.Feed(model, seq.Cache, fed, p.MaxTokens, seq.Logits));
        }
        // The turn decodes in a continuous batch, the loop a decode worker runs.
        var chunks = _batch.Add(seq, [], CancellationToken.None).ReadAllAsync().ToBlockingEnumerable().ToList();
        _last = chunks[^1].TokenId ?? throw new InvalidOperationException("a conversation's turn ended without a token");
        return chunks;
    }

    /// <summary>Runs model passes outside the batch on its thread, between its steps.</summary>
    private void Exclusive(Action work) => _batch!.RunExclusiveAsync(() => { work(); return true; }).GetAwaiter().GetResult();

    public void Dispose()
    {
        _batch?.Dispose();
        _cache?.Dispose();
    }
}
