using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Grpc.Core;
using LlmCluster.V1;
using EngineFinish = Cluster.Engine.Sampling.FinishReason;
using WireFinish = LlmCluster.V1.FinishReason;

namespace Cluster.Serving.Mapping;

/// <summary>Sampling parameters and results between the wire (common.proto) and the engine.</summary>
public static class SamplingMapping
{
    /// <summary>
    /// The engine's parameters for a request; unset fields take the OpenAI defaults of
    /// <see cref="SamplingParameters"/>. Throws INVALID_ARGUMENT naming the field ("sampling.top_p ...").
    /// </summary>
    public static SamplingParameters ToEngine(SamplingParams? s, int vocabSize)
    {
        s ??= new SamplingParams();
        var d = new SamplingParameters();
        var p = new SamplingParameters
        {
            Temperature = s.HasTemperature ? s.Temperature : d.Temperature,
            TopK = s.HasTopK ? s.TopK : d.TopK,
            TopP = s.HasTopP ? s.TopP : d.TopP,
            MinP = s.HasMinP ? s.MinP : d.MinP,
            PresencePenalty = s.HasPresencePenalty ? s.PresencePenalty : d.PresencePenalty,
            FrequencyPenalty = s.HasFrequencyPenalty ? s.FrequencyPenalty : d.FrequencyPenalty,
            RepetitionPenalty = s.HasRepetitionPenalty ? s.RepetitionPenalty : d.RepetitionPenalty,
            LogitBias = s.LogitBias.ToDictionary(kv => kv.Key, kv => kv.Value),
            MaxTokens = s.HasMaxTokens ? s.MaxTokens : d.MaxTokens,
            MinTokens = s.HasMinTokens ? s.MinTokens : d.MinTokens,
            Stop = s.Stop.ToList(),
            StopTokenIds = s.StopTokenIds.ToList(),
            IgnoreEos = s.IgnoreEos,
            Seed = s.HasSeed ? unchecked((long)s.Seed) : null,
            Logprobs = s.Logprobs ? Math.Max(0, s.TopLogprobs) : null,
            N = s.HasN ? s.N : d.N,
            BestOf = s.HasBestOf ? s.BestOf : null,
            NumBeams = s.BeamSearch is { NumBeams: > 0 } b ? b.NumBeams : d.NumBeams,
            LengthPenalty = s.BeamSearch is { HasLengthPenalty: true } lp ? lp.LengthPenalty : d.LengthPenalty,
            EarlyStopping = s.BeamSearch?.EarlyStopping ?? d.EarlyStopping,
        };
        try
        {
            p.Validate(vocabSize, name => "sampling." + name);
        }
        catch (ArgumentException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        return p;
    }

    /// <summary>The wire form of resolved parameters (the gateway fixes the seed before fanning out).</summary>
    public static SamplingParams WithSeed(SamplingParams? s, long seed)
    {
        var copy = s?.Clone() ?? new SamplingParams();
        copy.Seed = unchecked((ulong)seed);
        return copy;
    }

    public static WireFinish ToWire(EngineFinish? f) => f switch
    {
        EngineFinish.Stop => WireFinish.Stop,
        EngineFinish.Length => WireFinish.Length,
        EngineFinish.Eos => WireFinish.Eos,
        EngineFinish.Abort => WireFinish.Abort,
        _ => WireFinish.Unspecified,
    };

    public static EngineFinish? ToEngine(WireFinish f) => f switch
    {
        WireFinish.Stop => EngineFinish.Stop,
        WireFinish.Length => EngineFinish.Length,
        WireFinish.Eos => EngineFinish.Eos,
        WireFinish.Abort => EngineFinish.Abort,
        _ => null,
    };

    public static LlmCluster.V1.TokenLogprob? ToWire(TokenLogprobs? l)
    {
        if (l is null) return null;
        var w = new LlmCluster.V1.TokenLogprob { TokenId = l.Id, Logprob = l.Logprob };
        foreach (var t in l.Top) w.Top.Add(new TopLogprob { TokenId = t.Id, Logprob = t.Logprob });
        return w;
    }
}
