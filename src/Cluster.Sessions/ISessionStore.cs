namespace Cluster.Sessions;

/// <summary>
/// Session metadata and per-session token logs, shared by gateways so that a stream can be resumed
/// after a client reconnects or a decode worker dies. Implementations: <see cref="RedisSessionStore"/>
/// and the in-process default <see cref="InMemorySessionStore"/>; both pass one contract test.
/// Both the metadata and the log expire after the store's TTL without activity.
/// </summary>
public interface ISessionStore
{
    /// <summary>Stores a new session; false when one with this id exists. Sets CreatedAt/UpdatedAt when left default.</summary>
    Task<bool> TryCreateAsync(SessionInfo session, CancellationToken ct = default);

    /// <summary>The session, or null when it does not exist or expired.</summary>
    Task<SessionInfo?> GetAsync(string sessionId, CancellationToken ct = default);

    /// <summary>Applies a partial update and refreshes the TTL; false when the session does not exist.</summary>
    Task<bool> UpdateAsync(string sessionId, SessionUpdate update, CancellationToken ct = default);

    /// <summary>Removes the session and its token log; false when it did not exist.</summary>
    Task<bool> DeleteAsync(string sessionId, CancellationToken ct = default);

    /// <summary>Live sessions, most recently active first, at most <paramref name="limit"/>.</summary>
    Task<IReadOnlyList<SessionInfo>> ListAsync(int limit, CancellationToken ct = default);

    /// <summary>
    /// Appends one token to the session's log (call it before forwarding the token). Indices must
    /// increase. Returns false, and stores nothing, when the log already holds this index or a
    /// later one (a retried append) or is complete.
    /// </summary>
    Task<bool> TryAppendTokenAsync(string sessionId, TokenEntry token, CancellationToken ct = default);

    /// <summary>Entries with an index greater than <paramref name="afterIndex"/> (-1: from the start), at most <paramref name="maxCount"/>.</summary>
    Task<TokenLogPage> ReadTokensAsync(string sessionId, long afterIndex, int maxCount, CancellationToken ct = default);

    /// <summary>
    /// Entries after <paramref name="afterIndex"/>: first those already logged, then live ones as
    /// they are appended. Ends when the log is complete or the session is deleted or expires;
    /// otherwise runs until <paramref name="ct"/> is cancelled.
    /// </summary>
    IAsyncEnumerable<TokenEntry> FollowTokensAsync(string sessionId, long afterIndex, CancellationToken ct = default);

    /// <summary>Marks the log complete (no more appends) and records the reason in the session. Idempotent: the first reason wins.</summary>
    Task CompleteTokenLogAsync(string sessionId, string finishReason, CancellationToken ct = default);
}
