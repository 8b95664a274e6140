namespace Cluster.Engine.Sampling;

/// <summary>
/// Nucleus sampling (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration"): keeps the
/// smallest set of most likely candidates whose probabilities (softmax of the current logits, so
/// after temperature) sum to at least p. The most likely token always stays.
/// </summary>
public sealed class TopPSampler(float p) : ISampler
{
    private double[] _probs = [];

    public string Name => $"top_p({p})";
    public bool ChangesGreedy => false;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (p >= 1f) return;
        candidates.Sort();
        if (_probs.Length < candidates.Count) _probs = new double[candidates.Ids.Length];
        candidates.Softmax(_probs);
        double cumulative = 0;
        int keep = 0;
        while (keep < candidates.Count)
        {
            cumulative += _probs[keep++];
            if (cumulative >= p) break;
        }
        candidates.Truncate(keep);
    }
}
