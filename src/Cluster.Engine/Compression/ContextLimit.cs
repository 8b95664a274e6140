namespace Cluster.Engine.Compression;

/// <summary>
/// The one context check: whether a sequence can take more tokens. A bounded policy always can (it
/// evicts, and its positions are its own business: StreamingLLM re-assigns them, the others keep the
/// original ones by design). Dense keeps every token, so the sequence is bounded by the model's
/// training context, since RoPE models degrade past it (StreamingLLM, figure 3), unless extrapolation
/// was asked for. Generation's length limit, a conversation turn's admission, the gateway's refusal
/// and making room before a pass all ask this, so they cannot disagree.
/// </summary>
public static class ContextLimit
{
    /// <summary>Null when a sequence that has seen <paramref name="tokensSeen"/> tokens (original positions,
    /// evicted ones included) can take <paramref name="incoming"/> more under <paramref name="policy"/>
    /// with a model of <paramref name="context"/> positions; else why not.</summary>
    public static string? Refusal(KvCompressionPolicy policy, int tokensSeen, int incoming, int context)
    {
        if (Fits(policy, tokensSeen, incoming, context)) return null;
        return $"context exhausted: {incoming} more tokens after {tokensSeen} would go past the model's context of {context} positions " +
               $"with the {policy.Name} policy; start a new session, use a bounded policy such as sink_window(4,252), or allow extrapolation";
    }

    /// <inheritdoc cref="Refusal"/>
    /// <returns>Whether the tokens fit.</returns>
    public static bool Fits(KvCompressionPolicy policy, int tokensSeen, int incoming, int context) =>
        policy.Budget is not null || policy is DensePolicy { AllowExtrapolation: true } || (long)tokensSeen + incoming <= context;
}

/// <summary>A dense cache was asked to go past the model's context.</summary>
public sealed class ContextExceededException(string message) : InvalidOperationException(message);
