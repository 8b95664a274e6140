namespace Cluster.Engine.Sampling;

/// <summary>Picks the candidate with the highest logit (temperature 0). Lowest id wins a tie.</summary>
public sealed class GreedySampler : ISampler
{
    public string Name => "greedy";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        int best = -1;
        for (int i = 0; i < candidates.Count; i++)
            if (best < 0 || candidates.Logits[i] > candidates.Logits[best] ||
                (candidates.Logits[i] == candidates.Logits[best] && candidates.Ids[i] < candidates.Ids[best])) best = i;
        candidates.Selected = candidates.Ids[best];
    }
}
