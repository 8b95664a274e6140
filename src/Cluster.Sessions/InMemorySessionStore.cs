using System.Runtime.CompilerServices;

namespace Cluster.Sessions;

/// <summary>
/// The in-process session store used when no Redis is configured: same contract as
/// <see cref="RedisSessionStore"/>, but lost when the process exits. Bounded in memory, because a
/// gateway without Redis keeps every session a client ever started for the TTL: at most
/// <c>maxSessions</c> sessions and about <c>maxBytes</c> of them (<see cref="SessionFootprint"/>),
/// and <c>maxTokensPerSession</c> entries per log. Past a bound, expired sessions go first, then
/// finished ones, oldest finish first (their streams are over: only a late Resume wants them), and
/// only then the running session closest to expiry (one nobody has written for longest). Expired
/// sessions are also swept every <see cref="SweepInterval"/> (on the next call), so memory is given
/// back while the store is idle rather than only when it is full. One lock guards everything;
/// followers wait on a per-session signal that every append, completion or deletion fires.
/// </summary>
public sealed class InMemorySessionStore : ISessionStore
{
    private sealed class Slot
    {
        public SessionInfo? Info;
        public readonly List<TokenEntry> Tokens = new();
        public bool Complete;
        public string? FinishReason;
        public DateTimeOffset ExpiresAt;
        public TaskCompletionSource Changed = NewSignal();
        /// <summary>Its place in <see cref="_finished"/> once its log is complete.</summary>
        public LinkedListNode<string>? FinishedNode;
        public long Bytes = SessionFootprint.Slot;
    }

    /// <summary>How often expired sessions are swept (at most; the sweep runs inside the next call).</summary>
    public static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(5);

    private readonly Dictionary<string, Slot> _slots = new(StringComparer.Ordinal);
    /// <summary>Ids of sessions whose log is complete, oldest completion first: the eviction order.</summary>
    private readonly LinkedList<string> _finished = new();
    private readonly object _gate = new();
    private readonly TimeSpan _ttl;
    private readonly int _maxSessions;
    private readonly long _maxBytes;
    private readonly int _maxTokens;
    private readonly TimeProvider _time;
    private long _bytes;
    private long _evicted;
    private DateTimeOffset _nextSweep;

    /// <param name="ttl">How long a session lives after its last write.</param>
    /// <param name="maxSessions">Most sessions held at once.</param>
    /// <param name="maxTokensPerSession">Most entries in one token log; one more append throws.</param>
    /// <param name="maxBytes">Most bytes (estimated by <see cref="SessionFootprint"/>) held at once.</param>
    public InMemorySessionStore(TimeSpan ttl, int maxSessions = 10_000, int maxTokensPerSession = 1 << 20, TimeProvider? time = null, long maxBytes = 256L << 20)
    {
        if (ttl <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(ttl), "ttl must be positive");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSessions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokensPerSession, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1);
        _ttl = ttl;
        _maxSessions = maxSessions;
        _maxBytes = maxBytes;
        _maxTokens = maxTokensPerSession;
        _time = time ?? TimeProvider.System;
        _nextSweep = _time.GetUtcNow() + SweepInterval;
    }

    /// <summary>Sessions held now (expired ones not yet swept included).</summary>
    public int Count { get { lock (_gate) return _slots.Count; } }

    /// <summary>Estimated bytes held now (<see cref="SessionFootprint"/>).</summary>
    public long EstimatedBytes { get { lock (_gate) return _bytes; } }

    /// <summary>Sessions dropped before their TTL to stay within the bounds.</summary>
    public long Evicted { get { lock (_gate) return _evicted; } }

    public Task<bool> TryCreateAsync(SessionInfo session, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var slot = Find(session.Id, now);
            if (slot?.Info is not null) return Task.FromResult(false);
            slot ??= Add(session.Id, now);
            SetInfo(slot, session with
            {
                CreatedAt = session.CreatedAt == default ? now : session.CreatedAt,
                UpdatedAt = session.UpdatedAt == default ? now : session.UpdatedAt,
            });
            slot.ExpiresAt = now + _ttl;
            EnforceBytes(session.Id);
            return Task.FromResult(true);
        }
    }

    public Task<SessionInfo?> GetAsync(string sessionId, CancellationToken ct = default)
    {
        lock (_gate) return Task.FromResult(Find(sessionId, _time.GetUtcNow())?.Info);
    }

    public Task<bool> UpdateAsync(string sessionId, SessionUpdate update, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var slot = Find(sessionId, now);
            if (slot?.Info is null) return Task.FromResult(false);
            SetInfo(slot, update.ApplyTo(slot.Info, now));
            slot.ExpiresAt = now + _ttl;
            EnforceBytes(sessionId);
            return Task.FromResult(true);
        }
    }

    public Task<bool> DeleteAsync(string sessionId, CancellationToken ct = default)
    {
        lock (_gate)
        {
            var slot = Find(sessionId, _time.GetUtcNow());
            if (slot is null) return Task.FromResult(false);
            Remove(sessionId, slot);
            return Task.FromResult(slot.Info is not null);
        }
    }

    public Task<IReadOnlyList<SessionInfo>> ListAsync(int limit, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            PruneExpired(now);
            IReadOnlyList<SessionInfo> list = _slots.Values.Where(s => s.Info is not null)
                .OrderByDescending(s => s.ExpiresAt).Take(limit).Select(s => s.Info!).ToList();
            return Task.FromResult(list);
        }
    }

    public Task<bool> TryAppendTokenAsync(string sessionId, TokenEntry token, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(token.Index);
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var slot = Find(sessionId, now) ?? Add(sessionId, now);
            if (slot.Complete || (slot.Tokens.Count > 0 && slot.Tokens[^1].Index >= token.Index)) return Task.FromResult(false);
            if (slot.Tokens.Count >= _maxTokens)
                throw new InvalidOperationException($"token log of session {sessionId} is full ({_maxTokens} entries)");
            slot.Tokens.Add(token);
            Grow(slot, SessionFootprint.Of(token));
            slot.ExpiresAt = now + _ttl;
            Signal(slot);
            EnforceBytes(sessionId);
            return Task.FromResult(true);
        }
    }

    public Task<TokenLogPage> ReadTokensAsync(string sessionId, long afterIndex, int maxCount, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        lock (_gate) return Task.FromResult(ReadLocked(Find(sessionId, _time.GetUtcNow()), afterIndex, maxCount));
    }

    public async IAsyncEnumerable<TokenEntry> FollowTokensAsync(string sessionId, long afterIndex, [EnumeratorCancellation] CancellationToken ct = default)
    {
        long last = afterIndex;
        while (true)
        {
            TokenLogPage page;
            Task changed;
            lock (_gate)
            {
                var slot = Find(sessionId, _time.GetUtcNow());
                if (slot is null) yield break;
                page = ReadLocked(slot, last, 512);
                changed = slot.Changed.Task;
            }
            foreach (var e in page.Entries)
            {
                last = e.Index;
                yield return e;
            }
            if (page.IsComplete) yield break;
            // Wait for the next append only when the page drained everything logged so far.
            // The timed wait lets a follower notice expiry, which nothing signals.
            if (page.Entries.Count < 512)
            {
                try { await changed.WaitAsync(TimeSpan.FromSeconds(1), _time, ct).ConfigureAwait(false); }
                catch (TimeoutException) { }
            }
        }
    }

    public Task CompleteTokenLogAsync(string sessionId, string finishReason, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(finishReason);
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var slot = Find(sessionId, now) ?? Add(sessionId, now);
            if (slot.Complete) return Task.CompletedTask;
            slot.Complete = true;
            slot.FinishReason = finishReason;
            slot.FinishedNode = _finished.AddLast(sessionId);
            if (slot.Info is not null) SetInfo(slot, new SessionUpdate { FinishReason = finishReason }.ApplyTo(slot.Info, now));
            slot.ExpiresAt = now + _ttl;
            Signal(slot);
            return Task.CompletedTask;
        }
    }

    private static TokenLogPage ReadLocked(Slot? slot, long afterIndex, int maxCount)
    {
        if (slot is null) return new TokenLogPage([], false, null);
        var tokens = slot.Tokens;
        // Indices increase, so the first entry after afterIndex is found by binary search.
        int lo = 0, hi = tokens.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (tokens[mid].Index <= afterIndex) lo = mid + 1; else hi = mid;
        }
        int n = Math.Min(maxCount, tokens.Count - lo);
        var entries = tokens.GetRange(lo, n);
        bool complete = slot.Complete && lo + n == tokens.Count;
        return new TokenLogPage(entries, complete, complete ? slot.FinishReason : null);
    }

    private Slot? Find(string id, DateTimeOffset now)
    {
        SweepIfDue(now);
        if (!_slots.TryGetValue(id, out var slot)) return null;
        if (slot.ExpiresAt > now) return slot;
        Remove(id, slot);
        return null;
    }

    private Slot Add(string id, DateTimeOffset now)
    {
        if (_slots.Count >= _maxSessions)
        {
            PruneExpired(now);
            if (_slots.Count >= _maxSessions) EvictOne(keep: null);
        }
        var slot = new Slot { ExpiresAt = now + _ttl };
        _slots[id] = slot;
        _bytes += slot.Bytes;
        return slot;
    }

    private void SetInfo(Slot slot, SessionInfo info)
    {
        Grow(slot, SessionFootprint.Of(info) - (slot.Info is null ? 0 : SessionFootprint.Of(slot.Info)));
        slot.Info = info;
    }

    private void Grow(Slot slot, long bytes)
    {
        slot.Bytes += bytes;
        _bytes += bytes;
    }

    /// <summary>Evicts until the byte bound holds, never the session being written (<paramref name="keep"/>):
    /// one session larger than the whole bound stays, alone.</summary>
    private void EnforceBytes(string keep)
    {
        if (_bytes <= _maxBytes) return;
        PruneExpired(_time.GetUtcNow());
        while (_bytes > _maxBytes && EvictOne(keep)) { }
    }

    /// <summary>Drops the oldest finished session, else the running one closest to expiry; false when
    /// only <paramref name="keep"/> is left.</summary>
    private bool EvictOne(string? keep)
    {
        var node = _finished.First;
        if (node is not null && node.Value == keep) node = node.Next;
        string? victim = node?.Value;
        if (victim is null)
        {
            DateTimeOffset soonest = DateTimeOffset.MaxValue;
            foreach (var (id, s) in _slots)
                if (id != keep && s.ExpiresAt < soonest) (victim, soonest) = (id, s.ExpiresAt);
        }
        if (victim is null) return false;
        Remove(victim, _slots[victim]);
        _evicted++;
        return true;
    }

    private void SweepIfDue(DateTimeOffset now)
    {
        if (now < _nextSweep) return;
        _nextSweep = now + SweepInterval;
        PruneExpired(now);
    }

    private void PruneExpired(DateTimeOffset now)
    {
        List<string>? expired = null;
        foreach (var (id, slot) in _slots)
            if (slot.ExpiresAt <= now) (expired ??= []).Add(id);
        if (expired is null) return;
        foreach (var id in expired) Remove(id, _slots[id]);
        // The dictionary keeps its buckets at their largest; give them back once most entries are gone.
        if (_slots.Count < _slots.EnsureCapacity(0) / 4) _slots.TrimExcess();
    }

    private void Remove(string id, Slot slot)
    {
        _slots.Remove(id);
        _bytes -= slot.Bytes;
        if (slot.FinishedNode is { } node)
        {
            _finished.Remove(node);
            slot.FinishedNode = null;
        }
        Signal(slot); // followers wake up, find the session gone and end
    }

    private static void Signal(Slot slot)
    {
        var old = slot.Changed;
        slot.Changed = NewSignal();
        old.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
