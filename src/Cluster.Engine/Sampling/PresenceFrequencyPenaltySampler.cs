namespace Cluster.Engine.Sampling;

/// <summary>
/// OpenAI's presence and frequency penalties, over the tokens generated so far (not the prompt), as
/// the API reference states them: mu[j] -= c[j] * frequency_penalty + (c[j] &gt; 0) * presence_penalty,
/// where c[j] is how often token j was generated.
/// </summary>
public sealed class PresenceFrequencyPenaltySampler(float presence, float frequency) : ISampler
{
    public string Name => $"penalties(presence={presence}, frequency={frequency})";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        foreach (var id in state.DistinctGenerated)
        {
            int i = candidates.IndexOf(id);
            if (i >= 0) candidates.Logits[i] -= state.GeneratedCount(id) * frequency + presence;
        }
    }
}
