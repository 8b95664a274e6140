using Cluster.Engine.Compression.Calibration;

namespace Cluster.Engine.Compression;

/// <summary>
/// `qfilters(budget, W)`: Q-Filters (Godey et al. 2025). Queries and keys share a dominant direction
/// per head, so &lt;q, k&gt; is estimated by the key's projection on it without seeing any query. Keeps
/// the last W tokens and, of the older ones, the budget - W with the highest score -&lt;k, f[layer, head]&gt;
/// (k the post-RoPE key, f the calibrated filter; see <see cref="QFilterCalibration"/> for its sign).
/// Per KV head; original positions kept.
/// </summary>
public sealed class QFiltersPolicy : RecentWindowScorer
{
    public QFiltersPolicy(int budget, int window, QFilters filters) : base(budget, window) => Filters = filters;

    public QFilters Filters { get; }

    public override string Name => $"qfilters({BudgetTokens},{Window})";

    protected override float ScoreOld(in SlotView view, int slot) =>
        -System.Numerics.Tensors.TensorPrimitives.Dot(view.Key(slot), Filters.Filter(view.Layer, view.Head));
}
