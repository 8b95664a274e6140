namespace Cluster.Engine.Sampling;

/// <summary>
/// Bans the tokens that would end the output (EOS and stop_token_ids) until min_tokens have been
/// generated, as vLLM's min_tokens processor does: their logits become -infinity.
/// </summary>
public sealed class MinTokensSampler(int minTokens, IReadOnlyList<int> endingIds) : ISampler
{
    public string Name => $"min_tokens({minTokens})";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (state.Step >= minTokens) return;
        foreach (var id in endingIds)
        {
            int i = candidates.IndexOf(id);
            if (i >= 0) candidates.Logits[i] = float.NegativeInfinity;
        }
    }
}
