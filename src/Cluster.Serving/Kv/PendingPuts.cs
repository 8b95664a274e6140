namespace Cluster.Serving.Kv;

/// <summary>
/// Puts announced before they stream (CacheManager.ReservePut): a reader of a session waits while one
/// is pending, so prefill can answer with the first token before its KV has landed and the decode
/// worker that asks for it next still reads the new version. A reservation ends when its put ends,
/// stored or failed, or after <see cref="Expiry"/> (a prefill worker that died before putting).
/// </summary>
public sealed class PendingPuts(TimeProvider? time = null)
{
    public static readonly TimeSpan Expiry = TimeSpan.FromSeconds(30);

    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Dictionary<string, Queue<Reservation>> _bySession = [];
    private readonly Lock _lock = new();

    /// <summary>Sessions with a put announced and not yet ended.</summary>
    public int Count { get { lock (_lock) return _bySession.Count; } }

    public void Reserve(string sessionId)
    {
        var r = new Reservation(_time.GetUtcNow() + Expiry);
        lock (_lock)
        {
            if (!_bySession.TryGetValue(sessionId, out var q)) _bySession[sessionId] = q = new Queue<Reservation>();
            q.Enqueue(r);
        }
    }

    /// <summary>A reserved put of the session ended (stored or failed): its reservation, the oldest, ends.</summary>
    public void Ended(string sessionId)
    {
        var done = new List<Reservation>();
        lock (_lock)
        {
            if (!_bySession.TryGetValue(sessionId, out var q)) return;
            // Reservations past their deadline (their put never came) go first; then this put's own.
            var now = _time.GetUtcNow();
            while (q.TryPeek(out var head) && head.Deadline <= now) done.Add(q.Dequeue());
            if (q.TryDequeue(out var mine)) done.Add(mine);
            if (q.Count == 0) _bySession.Remove(sessionId);
        }
        foreach (var r in done) r.Landed.TrySetResult();
    }

    /// <summary>Waits until no announced put of the session is pending (each at most until it expires).</summary>
    public async Task WaitAsync(string sessionId, CancellationToken ct)
    {
        while (true)
        {
            Reservation? next;
            lock (_lock)
            {
                if (!_bySession.TryGetValue(sessionId, out var q) || !q.TryPeek(out next)) return;
            }
            if (next.Deadline <= _time.GetUtcNow())
            {
                Expire(sessionId, next);
                continue;
            }
            try
            {
                // Woken when it lands; the deadline is checked again at least once a second.
                await next.Landed.Task.WaitAsync(TimeSpan.FromSeconds(1), ct);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>A reservation whose put never came ends at its deadline.</summary>
    private void Expire(string sessionId, Reservation r)
    {
        lock (_lock)
        {
            if (!_bySession.TryGetValue(sessionId, out var q) || !q.TryPeek(out var head) || head != r) return;
            q.Dequeue();
            if (q.Count == 0) _bySession.Remove(sessionId);
        }
        r.Landed.TrySetResult();
    }

    private sealed class Reservation(DateTimeOffset deadline)
    {
        public DateTimeOffset Deadline { get; } = deadline;
        public TaskCompletionSource Landed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
