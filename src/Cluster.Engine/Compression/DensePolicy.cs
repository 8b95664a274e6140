using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// `dense`: keeps every token. Bounded by the model's training context: a position past it is
/// refused (RoPE models degrade there, StreamingLLM figure 3) unless extrapolation is asked for.
/// </summary>
public sealed class DensePolicy(bool allowExtrapolation = false) : KvCompressionPolicy
{
    public bool AllowExtrapolation { get; } = allowExtrapolation;

    public override int? Budget => null;

    public override string Name => "dense";

    public override void BeforeAppend(LlamaModel model, SequenceKvCache cache, int incoming)
    {
        int context = model.Config.MaxPositions;
        if (!AllowExtrapolation && cache.TokensSeen + incoming > context)
            throw new ContextExceededException(
                $"dense: position {cache.TokensSeen + incoming - 1} is past the model's context of {context} tokens; " +
                "use a bounded policy such as sink_window(4,252) or allow extrapolation");
    }

    protected override void Score(in SlotView view, Span<float> scores) => scores.Fill(0);
}

/// <summary>A dense cache was asked to go past the model's context.</summary>
public sealed class ContextExceededException(string message) : InvalidOperationException(message);
