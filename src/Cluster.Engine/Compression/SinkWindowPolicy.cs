using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// `sink_window(S, W)`: StreamingLLM (Xiao et al. 2023). Keeps the first S tokens, the "attention
/// sinks" that absorb the attention mass softmax must put somewhere, and the last W. Positions are
/// assigned inside the cache (section 3.2): with n tokens cached, keys take positions 0..n-1 in cache
/// order and the new query n-1. Keys stay cached after RoPE; the base class re-rotates each moved
/// key by its shift (one rotation per eviction; RoPE rotations compose exactly up to rounding), so
/// attention needs no separate pre-RoPE path. Score: sinks highest, then newer higher. The fast path
/// (<see cref="OldestFirstEviction"/>) gives the same attention with all positions shifted by a frame
/// origin, so that a step turns only the sinks instead of every window key.
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

    /// <summary>With the fast path the query sits in the rotation frame of <see cref="OldestFirstEviction"/>:
    /// its distance to every kept key is the same as StreamingLLM's (query at n, key of rank j at j).</summary>
    public override int QueryPosition(SequenceKvCache cache) =>
        cache.Length + (FastEviction ? OldestFirstEviction.FrameOrigin(cache, Budget!.Value) : 0);

    /// <summary>Evicts the oldest window tokens (one row moved each) and turns only the sinks (and, once
    /// every budget evictions, the whole cache back by the budget): no pass over the window per step.</summary>
    private protected override bool EvictDirectly(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int keep, EvictionScope scope)
    {
        OldestFirstEviction.Evict(backend, rope, cache, keep, Sinks, period: Budget!.Value, scope);
        return true;
    }

    /// <summary>General path (<see cref="KvCompressionPolicy.FastEviction"/> off): slot order is original order.</summary>
    protected override void Score(in SlotView view, Span<float> scores)
    {
        for (int i = 0; i < scores.Length; i++) scores[i] = view.Positions[i] < Sinks ? float.PositiveInfinity : i;
    }
}
