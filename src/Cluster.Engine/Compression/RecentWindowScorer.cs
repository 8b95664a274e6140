namespace Cluster.Engine.Compression;

/// <summary>Shared shape of the key-scoring policies: the last W tokens are kept untouched (score +inf)
/// and the older ones compete on <see cref="ScoreOld"/> for the remaining budget - W slots.</summary>
public abstract class RecentWindowScorer : KvCompressionPolicy
{
    protected RecentWindowScorer(int budget, int window)
    {
        if (window < 0) throw new ArgumentOutOfRangeException(nameof(window), $"window must be >= 0, got {window}");
        if (budget < 1 || budget < window) throw new ArgumentOutOfRangeException(nameof(budget), $"budget must be at least 1 and at least the window ({window}), got {budget}");
        BudgetTokens = budget;
        Window = window;
    }

    public int BudgetTokens { get; }
    public int Window { get; }

    public override int? Budget => BudgetTokens;

    protected override bool ScoresKeys => true;

    protected abstract float ScoreOld(in SlotView view, int slot);

    protected override void Score(in SlotView view, Span<float> scores)
    {
        for (int i = 0; i < scores.Length; i++)
            scores[i] = view.InRecentWindow(i, Window) ? float.PositiveInfinity : ScoreOld(view, i);
    }
}
