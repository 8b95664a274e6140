using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// `dense`: keeps every token, so the cache grows by doubling and RoPE uses original positions.
/// Bounded by the model's training context (<see cref="ContextLimit"/>): a position past it is refused
/// (RoPE models degrade there, StreamingLLM figure 3) unless extrapolation is asked for.
/// </summary>
public sealed class DensePolicy(bool allowExtrapolation = false) : KvCompressionPolicy
{
    /// <summary>The policy of a cache created without one. Policies are stateless, so one object serves all.</summary>
    public static DensePolicy Default { get; } = new();

    /// <summary>Dense past the context, for measurements whose lengths the caller chose (perplexity
    /// windows, calibration sequences, benchmarks): they extrapolate as asked instead of failing.</summary>
    public static DensePolicy Extrapolating { get; } = new(allowExtrapolation: true);

    public bool AllowExtrapolation { get; } = allowExtrapolation;

    public override int? Budget => null;

    public override string Name => "dense";

    /// <summary>Evicts nothing; refuses tokens past the context.</summary>
    /// <exception cref="ContextExceededException">The tokens would pass the model's context.</exception>
    public override void BeforeAppend(LlamaModel model, SequenceKvCache cache, int incoming)
    {
        if (ContextLimit.Refusal(this, cache.TokensSeen, incoming, model.Config.MaxPositions) is { } why)
            throw new ContextExceededException(why);
    }

    protected override void Score(in SlotView view, Span<float> scores) => scores.Fill(0);
}
