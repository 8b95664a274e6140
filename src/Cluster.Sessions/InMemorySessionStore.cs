using System.Runtime.CompilerServices;

namespace Cluster.Sessions;

/// <summary>
/// The in-process session store used when no Redis is configured: same contract as
/// <see cref="RedisSessionStore"/>, but lost when the process exits. Bounded: at most
/// <c>maxSessions</c> sessions (expired ones are pruned first, then the one closest to expiry is
/// evicted) and <c>maxTokensPerSession</c> entries per log. One lock guards everything; followers
/// wait on a per-session signal that every append, completion or deletion fires.
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
    }

    private readonly Dictionary<string, Slot> _slots = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private readonly TimeSpan _ttl;
    private readonly int _maxSessions;
    private readonly int _maxTokens;
    private readonly TimeProvider _time;

    public InMemorySessionStore(TimeSpan ttl, int maxSessions = 10_000, int maxTokensPerSession = 1 << 20, TimeProvider? time = null)
    {
        if (ttl <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(ttl), "ttl must be positive");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSessions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokensPerSession, 1);
        _ttl = ttl;
        _maxSessions = maxSessions;
        _maxTokens = maxTokensPerSession;
        _time = time ?? TimeProvider.System;
    }

    public Task<bool> TryCreateAsync(SessionInfo session, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow();
        lock (_gate)
        {
            var slot = Find(session.Id, now);
            if (slot?.Info is not null) return Task.FromResult(false);
            slot ??= Add(session.Id, now);
            slot.Info = session with
            {
                CreatedAt = session.CreatedAt == default ? now : session.CreatedAt,
                UpdatedAt = session.UpdatedAt == default ? now : session.UpdatedAt,
            };
            slot.ExpiresAt = now + _ttl;
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
            slot.Info = update.ApplyTo(slot.Info, now);
            slot.ExpiresAt = now + _ttl;
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
            slot.ExpiresAt = now + _ttl;
            Signal(slot);
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
            if (slot.Info is not null) slot.Info = new SessionUpdate { FinishReason = finishReason }.ApplyTo(slot.Info, now);
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
            if (_slots.Count >= _maxSessions)
            {
                var victim = _slots.MinBy(kv => kv.Value.ExpiresAt);
                Remove(victim.Key, victim.Value);
            }
        }
        var slot = new Slot { ExpiresAt = now + _ttl };
        _slots[id] = slot;
        return slot;
    }

    private void PruneExpired(DateTimeOffset now)
    {
        foreach (var (id, slot) in _slots.Where(kv => kv.Value.ExpiresAt <= now).ToList()) Remove(id, slot);
    }

    private void Remove(string id, Slot slot)
    {
        _slots.Remove(id);
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
