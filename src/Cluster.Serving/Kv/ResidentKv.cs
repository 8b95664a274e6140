using Cluster.Engine.KvCache;

namespace Cluster.Serving.Kv;

/// <summary>
/// Caches a decode worker keeps after their streams end, so that the conversation's next turn, routed
/// back to this worker, starts from them with no transfer at all (KV-aware routing, as NVIDIA Dynamo
/// routes a request to the worker that holds its KV). The cache manager still has every final
/// checkpoint: this is only a faster copy, so evicting one costs a fetch, never a result. Bounded by
/// bytes, least recently kept first out, and by idle time; each cache also holds its room in the
/// worker's KV budget (a reservation) and gives it up whenever a request needs it (<see cref="Reclaim"/>),
/// as vLLM's cached free blocks do. A stream whose client went away is kept the same way, so that its
/// resume continues here without a fetch. A cache is taken out when used (one turn of a conversation
/// runs at a time) and is only handed out for the token counts the request can continue from. Thread-safe; it owns (and
/// disposes) what it holds, reservations included.
/// </summary>
public sealed class ResidentKv(long budgetBytes, TimeSpan idle, TimeProvider? clock = null) : IDisposable
{
    private readonly TimeProvider _clock = clock ?? TimeProvider.System;
    private readonly LinkedList<Entry> _lru = new(); // oldest first
    private readonly Dictionary<string, LinkedListNode<Entry>> _bySession = [];
    private long _bytes;

    private sealed record Entry(string Session, SequenceKvCache Cache, long Bytes, DateTimeOffset Kept, IDisposable? Room);

    public long BudgetBytes { get; } = budgetBytes;

    /// <summary>Bytes held now (the caches' allocated K and V).</summary>
    public long Bytes { get { lock (_lru) return _bytes; } }

    public int Count { get { lock (_lru) return _lru.Count; } }

    /// <summary>Whether a cache of <paramref name="session"/> is kept here now.</summary>
    public bool Holds(string session) { lock (_lru) return _bySession.ContainsKey(session); }

    /// <summary>Allocated K and V bytes of a cache, as this store counts it.</summary>
    public static long SizeOf(SequenceKvCache cache) =>
        cache.Layers.Sum(l => 2L * l.KvHeads * l.Capacity * l.HeadDim * sizeof(float));

    /// <summary>
    /// Keeps <paramref name="cache"/> as <paramref name="session"/>'s KV (replacing what it held), evicting
    /// the least recently kept caches past the budget. False (and the cache and its room disposed) when it
    /// alone is larger than the budget.
    /// </summary>
    /// <param name="room">Its reservation in the worker's KV budget, given back with the cache.</param>
    public bool Keep(string session, SequenceKvCache cache, IDisposable? room = null)
    {
        long size = SizeOf(cache);
        var evicted = new List<IDisposable>();
        bool kept;
        lock (_lru)
        {
            if (_bySession.Remove(session, out var old)) Drop(old, evicted);
            DropIdle(evicted);
            kept = size <= BudgetBytes;
            if (kept)
            {
                while (_bytes + size > BudgetBytes) Drop(_lru.First!, evicted);
                _bySession[session] = _lru.AddLast(new Entry(session, cache, size, _clock.GetUtcNow(), room));
                _bytes += size;
            }
        }
        foreach (var c in evicted) c.Dispose();
        if (!kept)
        {
            cache.Dispose();
            room?.Dispose();
        }
        return kept;
    }

    /// <summary>Drops the least recently kept caches until <paramref name="bytes"/> are freed (or none is
    /// left), giving their room back; the bytes freed.</summary>
    public long Reclaim(long bytes)
    {
        var evicted = new List<IDisposable>();
        long freed = 0;
        lock (_lru)
        {
            while (freed < bytes && _lru.First is { } first)
            {
                freed += first.Value.Bytes;
                Drop(first, evicted);
            }
        }
        foreach (var c in evicted) c.Dispose();
        return freed;
    }

    /// <summary>
    /// Takes <paramref name="session"/>'s cache when it holds exactly <paramref name="tokensSeen"/> tokens
    /// (a conversation's next turn); null otherwise (a cache of another count is stale for this request and is dropped).
    /// </summary>
    public SequenceKvCache? TryTake(string session, int tokensSeen) => TryTake(session, tokensSeen, tokensSeen);

    /// <summary>
    /// Takes <paramref name="session"/>'s cache when it holds between <paramref name="fewest"/> and
    /// <paramref name="most"/> tokens (a resumed stream: at least its prompt, at most what its client has
    /// seen but the newest token). A cache holding more is cut back to <paramref name="most"/> when nothing
    /// was evicted from it (a compressed cache cannot be rolled back). Null otherwise, and the cache is dropped.
    /// </summary>
    public SequenceKvCache? TryTake(string session, int fewest, int most)
    {
        var evicted = new List<IDisposable>();
        SequenceKvCache? taken = null;
        lock (_lru)
        {
            DropIdle(evicted);
            if (_bySession.Remove(session, out var node))
            {
                _lru.Remove(node);
                _bytes -= node.Value.Bytes;
                if (node.Value.Room is { } room) evicted.Add(room); // the request that takes it has its own
                var cache = node.Value.Cache;
                if (cache.TokensSeen > most && most >= fewest && cache.EvictedNone) cache.Truncate(most);
                if (cache.TokensSeen >= fewest && cache.TokensSeen <= most) taken = cache;
                else evicted.Add(cache);
            }
        }
        foreach (var c in evicted) c.Dispose();
        return taken;
    }

    /// <summary>Drops <paramref name="session"/>'s cache if it is still <paramref name="cache"/>.</summary>
    public void Remove(string session, SequenceKvCache cache)
    {
        var evicted = new List<IDisposable>();
        lock (_lru) if (_bySession.TryGetValue(session, out var node) && node.Value.Cache == cache) Drop(node, evicted);
        foreach (var c in evicted) c.Dispose();
    }

    private void DropIdle(List<IDisposable> evicted)
    {
        var now = _clock.GetUtcNow();
        while (_lru.First is { } first && now - first.Value.Kept > idle) Drop(first, evicted);
    }

    private void Drop(LinkedListNode<Entry> node, List<IDisposable> evicted)
    {
        if (node.List is not null) _lru.Remove(node);
        _bySession.Remove(node.Value.Session);
        _bytes -= node.Value.Bytes;
        evicted.Add(node.Value.Cache);
        if (node.Value.Room is { } room) evicted.Add(room);
    }

    public void Dispose()
    {
        lock (_lru)
        {
            foreach (var e in _lru)
            {
                e.Cache.Dispose();
                e.Room?.Dispose();
            }
            _lru.Clear();
            _bySession.Clear();
            _bytes = 0;
        }
    }
}
