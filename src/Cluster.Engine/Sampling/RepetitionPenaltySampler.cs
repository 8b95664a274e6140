namespace Cluster.Engine.Sampling;

/// <summary>
/// The repetition penalty of CTRL (Keskar et al. 2019, section 4.1) as Hugging Face and vLLM apply
/// it: every token of the prompt or the output so far, counted once, has its logit divided by the
/// penalty when positive and multiplied by it when negative, so a penalty &gt; 1 always makes a
/// repeat less likely (CTRL's plain division would favour tokens with negative logits).
/// </summary>
public sealed class RepetitionPenaltySampler(float penalty) : ISampler
{
    public string Name => $"repetition_penalty({penalty})";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        foreach (var id in state.DistinctSeen)
        {
            int i = candidates.IndexOf(id);
            if (i < 0) continue;
            ref float logit = ref candidates.Logits[i];
            logit = logit > 0 ? logit / penalty : logit * penalty;
        }
    }
}
