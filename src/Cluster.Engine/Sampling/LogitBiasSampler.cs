namespace Cluster.Engine.Sampling;

/// <summary>Adds a per-token bias to the raw logits (OpenAI logit_bias: -100 bans a token in
/// practice, +100 makes it near certain).</summary>
public sealed class LogitBiasSampler(IReadOnlyDictionary<int, float> bias) : ISampler
{
    public string Name => $"logit_bias({bias.Count} tokens)";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        foreach (var (id, value) in bias)
        {
            int i = candidates.IndexOf(id);
            if (i >= 0) candidates.Logits[i] += value;
        }
    }
}
