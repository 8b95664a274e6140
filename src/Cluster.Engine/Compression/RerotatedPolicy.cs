namespace Cluster.Engine.Compression;

/// <summary>
/// `rerotate(P)`: any policy P with StreamingLLM's position rule (Xiao et al. 2023, section 3.2) in place
/// of original positions: P chooses the tokens, and the kept keys are re-rotated to their cache index so
/// that the query never sees a relative distance larger than the cache (kvpress's KeyRerotationPress
/// idea). Every head keeps the same number of slots, so one query position fits all heads even when
/// they keep different tokens. sink_window is this rule built in; rerotate(window(W)) equals
/// sink_window(0, W).
/// </summary>
public sealed class RerotatedPolicy(KvCompressionPolicy inner) : KvCompressionPolicy
{
    public KvCompressionPolicy Inner { get; } = inner is DensePolicy
        ? throw new ArgumentException("rerotate needs a bounded policy: dense never evicts, so it has nothing to re-rotate")
        : inner;

    public override int? Budget => Inner.Budget;

    public override string Name => $"rerotate({Inner.Name})";

    public override bool UsesCachePositions => true;

    protected override bool ScoresKeys => Inner.ReadsKeys;

    protected override void Score(in SlotView view, Span<float> scores) => Inner.ScoreSlots(view, scores);
}
