namespace Cluster.Engine.Sampling;

/// <summary>
/// The tokens still in play at one step, with their (processed) logits: processors change logits,
/// filters shrink <see cref="Count"/>, and the last sampler of a chain sets <see cref="Selected"/>.
/// Buffers are allocated once per vocabulary size and reused every step.
/// </summary>
public sealed class TokenCandidates(int vocabSize)
{
    private readonly (float NegLogit, int Id)[] _sortKeys = new (float, int)[vocabSize];

    public int[] Ids { get; } = new int[vocabSize];
    public float[] Logits { get; } = new float[vocabSize];

    /// <summary>Candidates in play: Ids[..Count], Logits[..Count].</summary>
    public int Count { get; private set; }

    /// <summary>True when the candidates are in descending logit order.</summary>
    public bool IsSorted { get; private set; }

    /// <summary>The chosen token id, or -1 until a picking sampler has run.</summary>
    public int Selected { get; set; } = -1;

    public Span<int> IdSpan => Ids.AsSpan(0, Count);
    public Span<float> LogitSpan => Logits.AsSpan(0, Count);

    /// <summary>Starts a step from the model's raw logits [vocab]: every token, in id order.</summary>
    public void Reset(ReadOnlySpan<float> logits)
    {
        if (logits.Length != Ids.Length) throw new ArgumentException($"expected {Ids.Length} logits, got {logits.Length}", nameof(logits));
        logits.CopyTo(Logits);
        for (int i = 0; i < Ids.Length; i++) Ids[i] = i;
        Count = Ids.Length;
        IsSorted = false;
        Selected = -1;
    }

    /// <summary>Where token <paramref name="id"/> sits among the candidates, or -1 when a filter dropped it.
    /// Direct while the candidates are still every token in id order (processors run there).</summary>
    public int IndexOf(int id)
    {
        if (Count == Ids.Length && Ids[id] == id) return id;
        return Array.IndexOf(Ids, id, 0, Count);
    }

    /// <summary>Orders the candidates by descending logit (ties by ascending id, so the order is deterministic).</summary>
    public void Sort()
    {
        if (IsSorted) return;
        // Ascending (-logit, id) is descending logit with ties broken by id.
        for (int i = 0; i < Count; i++) _sortKeys[i] = (-Logits[i], Ids[i]);
        Array.Sort(_sortKeys, 0, Count);
        for (int i = 0; i < Count; i++) (Logits[i], Ids[i]) = (-_sortKeys[i].NegLogit, _sortKeys[i].Id);
        IsSorted = true;
    }

    /// <summary>Keeps the first <paramref name="count"/> candidates (call <see cref="Sort"/> first to keep the best).</summary>
    public void Truncate(int count) => Count = Math.Clamp(count, 1, Count);

    /// <summary>Keeps the candidates whose logit is at least <paramref name="threshold"/>, in their current order.</summary>
    public void KeepAtLeast(float threshold)
    {
        int kept = 0;
        for (int i = 0; i < Count; i++)
        {
            if (!(Logits[i] >= threshold)) continue;
            Ids[kept] = Ids[i];
            Logits[kept] = Logits[i];
            kept++;
        }
        Count = Math.Max(kept, 1); // the best is never below a threshold derived from it
    }

    /// <summary>Index of the highest logit among the candidates (lowest index on ties).</summary>
    public int ArgMax()
    {
        int best = 0;
        for (int i = 1; i < Count; i++)
            if (Logits[i] > Logits[best]) best = i;
        return best;
    }

    /// <summary>Softmax of the candidates' logits into <paramref name="probs"/>[..Count], in double for stable sums.</summary>
    public void Softmax(Span<double> probs)
    {
        float max = Logits[ArgMax()];
        double sum = 0;
        for (int i = 0; i < Count; i++) sum += probs[i] = Math.Exp(Logits[i] - max);
        for (int i = 0; i < Count; i++) probs[i] /= sum;
    }
}
