namespace Cluster.Sessions;

public enum SessionStatus { Running, Finished, Aborted, Failed }

/// <summary>
/// What the gateway keeps about one generation session so that it can be resumed: who serves it,
/// how far it got, and where its latest KV checkpoint is. Token indices count generated tokens from 0.
/// </summary>
public sealed record SessionInfo
{
    public required string Id { get; init; }
    public required string Model { get; init; }
    /// <summary>Sampling parameters, opaque to the store (e.g. "temperature" -> "0.8", "seed" -> "42").</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
    /// <summary>KV policy in the cache manager's syntax, e.g. "sink_window(4,1024)".</summary>
    public string KvPolicy { get; init; } = "dense";
    public SessionStatus Status { get; init; } = SessionStatus.Running;
    public int PromptTokens { get; init; }
    public int GeneratedTokens { get; init; }
    public string? PrefillWorker { get; init; }
    public string? DecodeWorker { get; init; }
    public string? CheckpointId { get; init; }
    /// <summary>Index of the last token covered by <see cref="CheckpointId"/>; -1 when there is none.</summary>
    public long CheckpointTokenIndex { get; init; } = -1;
    /// <summary>Why the token log was completed ("stop", "length", "cancelled", ...); null while it is open.</summary>
    public string? FinishReason { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset UpdatedAt { get; init; }
}

/// <summary>A partial update: null fields are left as they are. Every update refreshes the session's TTL.</summary>
public sealed record SessionUpdate
{
    public SessionStatus? Status { get; init; }
    public int? PromptTokens { get; init; }
    public int? GeneratedTokens { get; init; }
    public string? PrefillWorker { get; init; }
    public string? DecodeWorker { get; init; }
    public string? CheckpointId { get; init; }
    public long? CheckpointTokenIndex { get; init; }
    /// <summary>Parameters to set (merged into the session's; the others stay).</summary>
    public IReadOnlyDictionary<string, string>? Parameters { get; init; }
    internal string? FinishReason { get; init; }

    private static Dictionary<string, string> Merge(IReadOnlyDictionary<string, string> old, IReadOnlyDictionary<string, string> set)
    {
        var merged = new Dictionary<string, string>(old, StringComparer.Ordinal);
        foreach (var (k, v) in set) merged[k] = v;
        return merged;
    }

    internal SessionInfo ApplyTo(SessionInfo s, DateTimeOffset now) => s with
    {
        Status = Status ?? s.Status,
        PromptTokens = PromptTokens ?? s.PromptTokens,
        GeneratedTokens = GeneratedTokens ?? s.GeneratedTokens,
        PrefillWorker = PrefillWorker ?? s.PrefillWorker,
        DecodeWorker = DecodeWorker ?? s.DecodeWorker,
        CheckpointId = CheckpointId ?? s.CheckpointId,
        CheckpointTokenIndex = CheckpointTokenIndex ?? s.CheckpointTokenIndex,
        FinishReason = FinishReason ?? s.FinishReason,
        Parameters = Parameters is null ? s.Parameters : Merge(s.Parameters, Parameters),
        UpdatedAt = now,
    };
}

/// <summary>One generated token as logged before it is forwarded: its index in the stream, id, and optional text piece.</summary>
public readonly record struct TokenEntry(long Index, int TokenId, string? Text = null);

/// <summary>
/// A page of the token log. <see cref="IsComplete"/> is true when the page reaches the end of a
/// completed log: nothing will ever follow its last entry.
/// </summary>
public sealed record TokenLogPage(IReadOnlyList<TokenEntry> Entries, bool IsComplete, string? FinishReason);
