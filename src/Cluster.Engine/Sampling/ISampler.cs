namespace Cluster.Engine.Sampling;

/// <summary>
/// One step of decoding, all with the same small shape (as llama.cpp's samplers): it changes the
/// candidates' logits, drops candidates, or, last in a chain, picks one into
/// <see cref="TokenCandidates.Selected"/>. A <see cref="SamplerChain"/> is itself a sampler.
/// </summary>
public interface ISampler
{
    /// <summary>Short name for diagnostics, e.g. "top_p(0.9)".</summary>
    string Name { get; }

    /// <summary>Whether this sampler can change which token greedy decoding picks (as vLLM's logits
    /// processors declare): penalties and biases can, temperature and the top-k/top-p/min-p filters
    /// cannot (they keep the most likely token), so a greedy chain leaves them out.</summary>
    bool ChangesGreedy { get; }

    void Apply(TokenCandidates candidates, SamplingState state);
}
