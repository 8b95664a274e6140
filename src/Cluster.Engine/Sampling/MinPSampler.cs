namespace Cluster.Engine.Sampling;

/// <summary>
/// Min-p sampling (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"): keeps the candidates
/// whose probability is at least min_p times the top one's. p_i &gt;= min_p * p_max is the same as
/// logit_i &gt;= logit_max + ln(min_p), so no softmax is needed.
/// </summary>
public sealed class MinPSampler(float minP) : ISampler
{
    public string Name => $"min_p({minP})";
    public bool ChangesGreedy => false;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (minP <= 0f) return;
        float max = candidates.Logits[candidates.ArgMax()];
        candidates.KeepAtLeast(max + MathF.Log(minP));
    }
}
