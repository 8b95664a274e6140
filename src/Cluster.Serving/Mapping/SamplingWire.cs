using Cluster.Engine.Sampling;
using LlmCluster.V1;

namespace Cluster.Serving.Mapping;

/// <summary>The engine's parameters in wire form (clients such as llmctl send them to the gateway).</summary>
public static class SamplingWire
{
    public static SamplingParams FromEngine(SamplingParameters p)
    {
        var s = new SamplingParams
        {
            Temperature = p.Temperature,
            TopK = p.TopK,
            TopP = p.TopP,
            MinP = p.MinP,
            PresencePenalty = p.PresencePenalty,
            FrequencyPenalty = p.FrequencyPenalty,
            RepetitionPenalty = p.RepetitionPenalty,
            MaxTokens = p.MaxTokens,
            MinTokens = p.MinTokens,
            IgnoreEos = p.IgnoreEos,
            Logprobs = p.Logprobs is not null,
            TopLogprobs = p.Logprobs ?? 0,
            N = p.N,
        };
        foreach (var (id, bias) in p.LogitBias) s.LogitBias[id] = bias;
        s.Stop.Add(p.Stop);
        s.StopTokenIds.Add(p.StopTokenIds);
        if (p.Seed is long seed) s.Seed = unchecked((ulong)seed);
        if (p.BestOf is int bestOf) s.BestOf = bestOf;
        if (p.IsBeamSearch) s.BeamSearch = new BeamSearchParams { NumBeams = p.NumBeams, LengthPenalty = p.LengthPenalty, EarlyStopping = p.EarlyStopping };
        return s;
    }
}
