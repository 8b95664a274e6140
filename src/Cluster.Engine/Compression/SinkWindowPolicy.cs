namespace Cluster.Engine.Compression;

/// <summary>
/// `sink_window(S, W)`: StreamingLLM (Xiao et al. 2023). Keeps the first S tokens, the "attention
/// sinks" that absorb the attention mass softmax must put somewhere, and the last W. Positions are
/// assigned inside the cache (section 3.2): with n tokens cached, keys take positions 0..n-1 in cache
/// order and the new query n-1. Keys stay cached after RoPE; the base class re-rotates each moved
/// key by its shift (one rotation per eviction; RoPE rotations compose exactly up to rounding), so
/// attention needs no separate pre-RoPE path. Score: sinks highest, then newer higher.
/// </summary>
public sealed class SinkWindowPolicy : KvCompressionPolicy
{
    public const int DefaultSinks = 4;

    public SinkWindowPolicy(int sinks, int window)
    {
        if (sinks < 0) throw new ArgumentOutOfRangeException(nameof(sinks), $"sinks must be >= 0, got {sinks}");
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), $"window must be at least 1, got {window}");
        Sinks = sinks;
        Window = window;
    }

    public int Sinks { get; }
    public int Window { get; }

    public override int? Budget => Sinks + Window;

    public override string Name => $"sink_window({Sinks},{Window})";

    public override bool UsesCachePositions => true;

    protected override int MinKept => Sinks;

    protected override void Score(in SlotView view, Span<float> scores)
    {
        for (int i = 0; i < scores.Length; i++) scores[i] = view.Positions[i] < Sinks ? float.PositiveInfinity : i;
    }
}
