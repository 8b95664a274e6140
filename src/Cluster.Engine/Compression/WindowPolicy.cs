using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// `window(W)`: keeps the last W tokens at their original positions (the "window attention"
/// baseline of StreamingLLM, Xiao et al. 2023, which collapses once the first tokens are evicted).
/// Score: newer is higher.
/// </summary>
public sealed class WindowPolicy : KvCompressionPolicy
{
    public WindowPolicy(int window)
    {
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), $"window must be at least 1, got {window}");
        Window = window;
    }

    public int Window { get; }

    public override int? Budget => Window;

    public override string Name => $"window({Window})";

    /// <summary>The window is the newest tokens: evict the oldest, one row moved each, no rotation.</summary>
    private protected override bool EvictDirectly(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int keep, EvictionScope scope)
    {
        OldestFirstEviction.Evict(backend, rope, cache, keep, sinks: 0, period: 0, scope);
        return true;
    }

    /// <summary>General path (<see cref="KvCompressionPolicy.FastEviction"/> off): slot order is original order.</summary>
    protected override void Score(in SlotView view, Span<float> scores)
    {
        for (int i = 0; i < scores.Length; i++) scores[i] = i;
    }
}
