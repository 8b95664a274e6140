namespace Cluster.Engine.Sampling;

/// <summary>Keeps the k candidates with the highest logits (Fan et al. 2018); ties at the border are
/// broken by lower token id, so exactly k stay.</summary>
public sealed class TopKSampler(int k) : ISampler
{
    public string Name => $"top_k({k})";
    public bool ChangesGreedy => false;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (k <= 0 || k >= candidates.Count) return;
        candidates.Sort();
        candidates.Truncate(k);
    }
}
