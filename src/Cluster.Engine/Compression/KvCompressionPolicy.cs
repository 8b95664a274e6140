using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// A KV-cache compression policy (DESIGN.md, "KV cache and compression contract"). The base class
/// owns the keep-top-n mechanics, as kvpress's ScorerPress does: per layer and KV head it asks
/// <see cref="Score"/> for one number per cached slot, keeps the highest-scoring slots in cache
/// order, and compacts the head with the backend. A policy is one small subclass that only scores.
/// Every head keeps the same number of slots (the budget), so all heads keep one length even when
/// they keep different tokens. Stateless: one policy object may serve many sequences.
/// </summary>
public abstract class KvCompressionPolicy
{
    /// <summary>Most tokens a head keeps (the new ones included), or null for no bound.</summary>
    public abstract int? Budget { get; }

    /// <summary>The canonical spec string, e.g. "sink_window(4,252)"; parsed back by <see cref="KvPolicyRegistry"/>.</summary>
    public abstract string Name { get; }

    /// <summary>
    /// False: keys keep the RoPE rotation of their original position and queries use the original
    /// position. True (StreamingLLM, Xiao et al. 2023, section 3.2): positions are assigned inside the
    /// cache, the key in slot j is rotated by j and the new token's query by the cache length, so a
    /// stream never reaches positions the model was not trained on.
    /// </summary>
    public virtual bool UsesCachePositions => false;

    /// <summary>RoPE position of the next token's query (and key): its original position, or with cache
    /// positions the cache length, shifted by the policy's rotation frame when it keeps one
    /// (sink_window's fast path, see <see cref="OldestFirstEviction"/>).</summary>
    public virtual int QueryPosition(SequenceKvCache cache) => UsesCachePositions ? cache.Length : cache.TokensSeen;

    /// <summary>Lets window and sink_window evict the oldest tokens directly (O(1) row moves per step)
    /// instead of scoring, sorting and compacting every slot. Off, they run the general path with slot
    /// order = original order; tests and `llmctl bench-eviction` compare the two. A cache must stay
    /// with one setting: the fast path keeps slots in ring order and sink_window's keys in its own frame.
    /// Policies without a fast path ignore it.</summary>
    public bool FastEviction { get; init; } = true;

    /// <summary>The fast path of a policy that can evict without scoring; false to run the general path.</summary>
    private protected virtual bool EvictDirectly(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int keep, EvictionScope scope) => false;

    /// <summary>Whether <see cref="Score"/> reads the keys (they are then copied to the host).</summary>
    protected virtual bool ScoresKeys => false;

    /// <summary>
    /// Fills <paramref name="scores"/> [slots] for one head; the highest are kept. Slots are in cache
    /// order (oldest first); <paramref name="incoming"/> tokens are about to be appended after them.
    /// </summary>
    protected abstract void Score(in SlotView view, Span<float> scores);

    /// <summary><see cref="Score"/> for a wrapper such as <see cref="RerotatedPolicy"/>.</summary>
    internal void ScoreSlots(in SlotView view, Span<float> scores) => Score(view, scores);

    internal bool ReadsKeys => ScoresKeys;

    /// <summary>Called by <see cref="KvRoom.Make"/> before <paramref name="incoming"/> tokens run (never by the
    /// model's forward pass): evicts so that the cache holds at most the budget afterwards (one token in,
    /// at most one out once full).</summary>
    /// <exception cref="ArgumentException">The chunk alone exceeds the budget: prefill densely and
    /// call <see cref="Compress"/>, or feed fewer tokens at a time.</exception>
    public virtual void BeforeAppend(LlamaModel model, SequenceKvCache cache, int incoming)
    {
        if (Budget is not int budget) return;
        if (incoming > budget)
            throw new ArgumentException($"{Name}: a chunk of {incoming} tokens exceeds the budget of {budget}; prefill densely and call Compress, or feed fewer tokens per forward");
        Evict(model.Backend, model.Rope, cache, budget - incoming, incoming, EvictionScope.Whole(cache));
    }

    /// <summary>
    /// Evicts so that the budget leaves room for <paramref name="space"/> tokens about to come (a new
    /// turn of a conversation: its prompt and its output), as StreamingLLM's chat demo does with
    /// evict_for_space before each round (Xiao et al. 2023). Never evicts below <see cref="MinKept"/>
    /// slots, so a turn longer than the budget still keeps e.g. the sinks; the per-chunk
    /// <see cref="BeforeAppend"/> then evicts the rest as the tokens arrive. Callers go through
    /// <see cref="KvRoom.MakeForTurn"/>.
    /// </summary>
    public void MakeRoom(LlamaModel model, SequenceKvCache cache, int space)
    {
        if (Budget is not int budget) return;
        int keep = Math.Max(budget - space, Math.Min(MinKept, budget));
        Evict(model.Backend, model.Rope, cache, keep, incoming: budget - keep, EvictionScope.Whole(cache));
    }

    /// <summary>Slots that <see cref="MakeRoom"/> always keeps (the sinks of sink_window).</summary>
    protected virtual int MinKept => 0;

    /// <summary>Compresses a cache (e.g. a long prompt's, prefilled densely) down to the budget at once.
    /// A policy with cache positions expects the key of rank j to be rotated at j (plus its frame origin,
    /// zero before any eviction), as a dense prefill leaves it.</summary>
    public void Compress(LlamaModel model, SequenceKvCache cache) => Compress(model.Backend, model.Rope, cache);

    /// <inheritdoc cref="Compress(LlamaModel, SequenceKvCache)"/>
    public void Compress(IComputeBackend backend, RopeTable rope, SequenceKvCache cache)
    {
        if (Budget is int budget) Evict(backend, rope, cache, budget, incoming: 0, EvictionScope.Whole(cache));
    }

    /// <summary>
    /// <see cref="Compress(IComputeBackend, RopeTable, SequenceKvCache)"/> for one layer, while the pass that fills
    /// the cache is still running: <paramref name="tokensSeen"/> is the count the cache will hold when it
    /// ends. A layer's eviction depends only on its own slots and that count, so compressing every layer
    /// this way leaves the cache exactly as one compression after the pass would; a prefill worker can
    /// then send each layer as soon as the model is done with it (layer-wise streaming, issue 17).
    /// </summary>
    public void CompressLayer(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int layer, int tokensSeen)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, cache.Layers.Length);
        if (Budget is int budget) Evict(backend, rope, cache, budget, incoming: 0, new EvictionScope(layer, layer + 1, tokensSeen));
    }

    private void Evict(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int keep, int incoming, EvictionScope scope)
    {
        if (FastEviction && EvictDirectly(backend, rope, cache, keep, scope)) return;
        var scratch = _scratch ??= new Scratch();
        for (int l = scope.FromLayer; l < scope.ToLayer; l++)
        {
            var layer = cache.Layers[l];
            for (int h = 0; h < layer.KvHeads; h++)
            {
                int n = layer.Lengths[h];
                if (n <= keep) continue;
                scratch.Ensure(n, ScoresKeys ? n * layer.HeadDim : 0);
                var keys = ScoresKeys ? scratch.Keys.AsSpan(0, n * layer.HeadDim) : default;
                if (ScoresKeys) backend.CopyToHost(layer.K, layer.Offset(h, 0), keys);
                var view = new SlotView(l, h, n, incoming, scope.TokensSeen, layer.Positions.AsSpan(h * layer.Capacity, n), keys, layer.HeadDim);
                var scores = scratch.Scores.AsSpan(0, n);
                Score(view, scores);
                var keepSlots = TopSlots(scores, keep, scratch.Order, scratch.Kept);
                backend.CompactKv(layer, h, keepSlots);
                if (UsesCachePositions)
                {
                    // Slot j must hold the key rotated at j: turn each moved key back by how far it moved.
                    for (int j = 0; j < keep; j++) scratch.Deltas[j] = j - keepSlots[j];
                    backend.RotateKeys(layer, h, scratch.Deltas.AsSpan(0, keep), rope);
                }
            }
        }
    }

    // Per-thread scratch, so that decoding allocates nothing per step while one policy object serves
    // many sequences.
    [ThreadStatic] private static Scratch? _scratch;

    private sealed class Scratch
    {
        public float[] Scores = [], Keys = [];
        public int[] Order = [], Kept = [], Deltas = [];

        public void Ensure(int slots, int keyFloats)
        {
            if (Scores.Length < slots) (Scores, Order, Kept, Deltas) = (new float[slots], new int[slots], new int[slots], new int[slots]);
            if (Keys.Length < keyFloats) Keys = new float[keyFloats];
        }
    }

    /// <summary>The <paramref name="keep"/> highest-scoring slots, ascending. <paramref name="order"/> and
    /// <paramref name="kept"/> are scratch of at least scores.Length; scores are overwritten.</summary>
    internal static ReadOnlySpan<int> TopSlots(Span<float> scores, int keep, int[] order, int[] kept)
    {
        int n = scores.Length;
        for (int i = 0; i < n; i++)
        {
            order[i] = i;
            scores[i] = -scores[i]; // ascending sort of the negated scores = highest first
        }
        scores.Sort(order.AsSpan(0, n));
        Array.Copy(order, kept, keep);
        Array.Sort(kept, 0, keep);
        return kept.AsSpan(0, keep);
    }
}

/// <summary>What a policy may look at to score the slots of one KV head.</summary>
/// <param name="Keys">Post-RoPE keys [slots, headDim] in the half-split layout; empty unless the policy scores keys.</param>
/// <param name="TokensSeen">Original position of the next token.</param>
public readonly ref struct SlotView(int layer, int head, int slots, int incoming, int tokensSeen, ReadOnlySpan<int> positions, ReadOnlySpan<float> keys, int headDim)
{
    public int Layer { get; } = layer;
    public int Head { get; } = head;
    public int Slots { get; } = slots;
    public int Incoming { get; } = incoming;
    public int TokensSeen { get; } = tokensSeen;

    /// <summary>Original position of each slot.</summary>
    public ReadOnlySpan<int> Positions { get; } = positions;

    public ReadOnlySpan<float> Keys { get; } = keys;
    public int HeadDim { get; } = headDim;

    public ReadOnlySpan<float> Key(int slot) => Keys.Slice(slot * HeadDim, HeadDim);

    /// <summary>Whether a slot is among the last <paramref name="window"/> tokens once the incoming ones are appended.</summary>
    public bool InRecentWindow(int slot, int window) => slot >= Slots - (window - Incoming);
}

/// <summary>The layers an eviction covers and the token count it works with (the cache's, or the count a
/// running pass will leave).</summary>
internal readonly record struct EvictionScope(int FromLayer, int ToLayer, int TokensSeen)
{
    public static EvictionScope Whole(SequenceKvCache cache) => new(0, cache.Layers.Length, cache.TokensSeen);
}
