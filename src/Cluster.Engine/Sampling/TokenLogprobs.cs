namespace Cluster.Engine.Sampling;

/// <summary>A token with its log-probability.</summary>
public readonly record struct TokenLogprob(int Id, float Logprob);

/// <summary>The chosen token's log-probability and the most likely alternatives at that step.</summary>
public sealed record TokenLogprobs(int Id, float Logprob, IReadOnlyList<TokenLogprob> Top)
{
    /// <summary>
    /// Log-softmax of <paramref name="logits"/> for <paramref name="chosen"/> and the <paramref name="top"/>
    /// most likely tokens. The generator passes the model's raw logits, before penalties, bias,
    /// temperature and filters (vLLM v1's default "raw_logprobs" mode), so the numbers describe the
    /// model and do not depend on the sampling settings.
    /// </summary>
    public static TokenLogprobs Compute(ReadOnlySpan<float> logits, int chosen, int top)
    {
        float max = float.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        float logZ = (float)(max + Math.Log(sum));

        // Top-k by repeated insertion into a small sorted list: k &lt;= 20, so this beats a full sort.
        var best = new List<TokenLogprob>(top + 1);
        for (int i = 0; i < logits.Length && top > 0; i++)
        {
            if (best.Count == top && logits[i] <= best[^1].Logprob) continue;
            int at = best.Count;
            while (at > 0 && logits[i] > best[at - 1].Logprob) at--;
            best.Insert(at, new TokenLogprob(i, logits[i]));
            if (best.Count > top) best.RemoveAt(top);
        }
        for (int j = 0; j < best.Count; j++) best[j] = best[j] with { Logprob = best[j].Logprob - logZ };
        return new TokenLogprobs(chosen, logits[chosen] - logZ, best);
    }
}
