namespace Cluster.Engine.Sampling;

/// <summary>
/// Samplers applied in order; itself a sampler, and only its last member picks the token.
/// <see cref="Build"/> fixes the order the API promises: penalties and logit_bias on the raw logits,
/// then temperature, then the top-k, top-p and min-p filters, then softmax and the draw.
/// </summary>
public sealed class SamplerChain(IReadOnlyList<ISampler> samplers) : ISampler
{
    // An array: a foreach over the interface list allocated an enumerator every step.
    private readonly ISampler[] _samplers = [.. samplers];

    public IReadOnlyList<ISampler> Samplers => _samplers;
    public string Name => string.Join(" -> ", Samplers.Select(s => s.Name));
    public bool ChangesGreedy => Samplers.Any(s => s.ChangesGreedy);

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        var samplers = _samplers;
        for (int i = 0; i < samplers.Length; i++) samplers[i].Apply(candidates, state);
    }

    /// <summary>Resets <paramref name="candidates"/> to <paramref name="logits"/>, runs the chain and
    /// returns the chosen id.</summary>
    public int Sample(ReadOnlySpan<float> logits, TokenCandidates candidates, SamplingState state)
    {
        candidates.Reset(logits);
        Apply(candidates, state);
        if (candidates.Selected < 0) throw new InvalidOperationException($"sampler chain '{Name}' picked no token: its last sampler must pick");
        return candidates.Selected;
    }

    /// <summary>The chain for <paramref name="p"/>. <paramref name="eosIds"/> are the model's
    /// end-of-sequence ids (min_tokens bans them). With temperature 0 only the samplers that can change
    /// greedy output are kept, ahead of argmax.</summary>
    public static SamplerChain Build(SamplingParameters p, IReadOnlyList<int> eosIds)
    {
        var processors = LogitProcessors(p, eosIds);
        if (p.IsGreedy) return new SamplerChain([.. processors.Where(s => s.ChangesGreedy), new GreedySampler()]);
        var all = new List<ISampler>(processors);
        if (p.Temperature != 1f) all.Add(new TemperatureSampler(p.Temperature));
        if (p.TopK > 0) all.Add(new TopKSampler(p.TopK));
        if (p.TopP < 1f) all.Add(new TopPSampler(p.TopP));
        if (p.MinP > 0f) all.Add(new MinPSampler(p.MinP));
        all.Add(new DistributionSampler());
        return new SamplerChain(all);
    }

    /// <summary>The samplers that work on raw logits (penalties, logit_bias, min_tokens): also what
    /// beam search applies before scoring.</summary>
    public static List<ISampler> LogitProcessors(SamplingParameters p, IReadOnlyList<int> eosIds)
    {
        var list = new List<ISampler>();
        if (p.RepetitionPenalty != 1f) list.Add(new RepetitionPenaltySampler(p.RepetitionPenalty));
        if (p.PresencePenalty != 0f || p.FrequencyPenalty != 0f) list.Add(new PresenceFrequencyPenaltySampler(p.PresencePenalty, p.FrequencyPenalty));
        if (p.LogitBias.Count > 0) list.Add(new LogitBiasSampler(p.LogitBias));
        if (p.MinTokens > 0)
        {
            var ending = (p.IgnoreEos ? [] : eosIds).Concat(p.StopTokenIds).Distinct().ToArray();
            if (ending.Length > 0) list.Add(new MinTokensSampler(p.MinTokens, ending));
        }
        return list;
    }
}
