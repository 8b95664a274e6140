namespace Cluster.Engine.Compression;

/// <summary>
/// `knorm(budget, W)`: keeps the last W tokens and, of the older ones, those whose post-RoPE key has
/// the smallest L2 norm (score -||k||; Devoto et al. 2024 observe that low-norm keys draw high
/// attention). Per KV head; original positions kept. The query-agnostic baseline of Q-Filters.
/// </summary>
public sealed class KNormPolicy(int budget, int window) : RecentWindowScorer(budget, window)
{
    public override string Name => $"knorm({BudgetTokens},{Window})";

    protected override float ScoreOld(in SlotView view, int slot) =>
        -MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(view.Key(slot)));
}
