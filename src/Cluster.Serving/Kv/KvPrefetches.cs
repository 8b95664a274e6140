using Cluster.Engine.KvCache;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>A prompt's KV fetched ahead of its Decode call: the handle, the digest of the blocks as they
/// came (the base of the sequence's incremental checkpoints) and the cache restored from them.</summary>
public sealed record PrefetchedKv(KvHandle Handle, KvDigest Loaded, SequenceKvCache Cache);

/// <summary>
/// KV a decode worker fetches while the prompt is still being prefilled (Decode.PrefetchKv, issue 17):
/// the gateway names the worker that will continue the request before prefill ends, so the worker's get
/// follows the prefill worker's put layer by layer and the Decode call that follows starts with no
/// transfer, as vLLM's disaggregated decode pulls KV while prefill still runs. A hint only: whatever goes
/// wrong (nothing stored, no room, too slow) leaves the Decode call to fetch as it always did.
/// <para>
/// One prefetch per session. A Decode call that arrives while it still fetches waits for it (it is ahead
/// of where a new get would be; one still waiting for the put to be announced asks once more and, if
/// it is not, gives up, and the call fetches itself). One that finished before its call came is parked: its cache in
/// <see cref="ResidentKv"/> (holding room in the KV budget that any request may reclaim, as kept caches
/// do) and its handle and digest here until <see cref="Expiry"/>. Thread-safe.
/// </para>
/// </summary>
public sealed class KvPrefetches(ResidentKv resident, Func<int, IDisposable?> tryRoom, TimeProvider? clock = null) : IDisposable
{
    /// <summary>How long a parked prefetch waits for its Decode call.</summary>
    public static readonly TimeSpan Expiry = TimeSpan.FromSeconds(60);

    private readonly TimeProvider _clock = clock ?? TimeProvider.System;
    private readonly Dictionary<string, Entry> _bySession = [];
    private readonly Lock _lock = new();

    /// <summary>What a prefetch fetches: null when there was nothing to fetch.</summary>
    public delegate Task<PrefetchedKv?> Fetch(State state, CancellationToken ct);

    /// <summary>Between a prefetch and its Decode call.</summary>
    public sealed class State
    {
        private readonly TaskCompletionSource _claimed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The Decode call has come: prefill has answered, so a put not announced by now will not be.</summary>
        public bool Claimed => _claimed.Task.IsCompleted;

        internal void Claim() => _claimed.TrySetResult();

        /// <summary>Waits <paramref name="delay"/> before the fetch asks again for a put not announced yet,
        /// or less: once the call has come, one more try settles it.</summary>
        public async Task BeforeAskingAgainAsync(TimeSpan delay, CancellationToken ct)
        {
            try
            {
                await _claimed.Task.WaitAsync(delay, ct);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    private sealed class Entry
    {
        public readonly CancellationTokenSource Cancel = new();
        public readonly State State = new();
        public TaskCompletionSource<PrefetchedKv?>? Claimer;
        public PrefetchedKv? Parked;
        public DateTimeOffset Deadline = DateTimeOffset.MaxValue;
    }

    /// <summary>Prefetches under way or parked.</summary>
    public int Count { get { lock (_lock) return _bySession.Count; } }

    /// <summary>Starts <paramref name="fetch"/> for <paramref name="session"/>; false when one is already under way or parked.</summary>
    public bool Start(string session, Fetch fetch)
    {
        var entry = new Entry();
        List<(string, SequenceKvCache)> expired;
        lock (_lock)
        {
            expired = TakeExpired();
            if (!_bySession.TryAdd(session, entry)) entry = null;
        }
        foreach (var (s, cache) in expired) resident.Remove(s, cache);
        if (entry is null) return false;
        _ = RunAsync(session, entry, fetch);
        return true;
    }

    private async Task RunAsync(string session, Entry entry, Fetch fetch)
    {
        PrefetchedKv? got = null;
        try
        {
            got = await fetch(entry.State, entry.Cancel.Token);
        }
        catch (Exception)
        {
            // A hint: its Decode call fetches itself (and reports what is wrong).
        }
        TaskCompletionSource<PrefetchedKv?>? claimer;
        bool dispose = false;
        lock (_lock)
        {
            claimer = entry.Claimer;
            if (claimer is null)
            {
                // Parked under the lock, so that a claimer finds it in the resident store once it finds it here.
                if (got is not null && tryRoom(got.Cache.Capacity) is { } room)
                {
                    if (resident.Keep(session, got.Cache, room))
                    {
                        entry.Parked = got;
                        entry.Deadline = _clock.GetUtcNow() + Expiry;
                    }
                }
                else dispose = got is not null;
                if (entry.Parked is null) _bySession.Remove(session);
            }
        }
        if (dispose) got!.Cache.Dispose();
        // The claimer may have given up meanwhile (its call cancelled): then the result is dropped.
        if (claimer is not null && !claimer.TrySetResult(got)) got?.Cache.Dispose();
    }

    /// <summary>
    /// The prefetch of <paramref name="session"/> for its Decode call: the parked one (null if its cache
    /// was reclaimed meanwhile), the one under way once it finishes (null if it found nothing), or null
    /// when there is none. The caller owns the cache it gets.
    /// </summary>
    public async Task<PrefetchedKv?> ClaimAsync(string session, CancellationToken ct)
    {
        Entry? entry;
        PrefetchedKv? parked = null;
        Task<PrefetchedKv?>? pending = null;
        lock (_lock)
        {
            if (!_bySession.Remove(session, out entry)) return null;
            if (entry.Parked is { } p) parked = p;
            else
            {
                entry.Claimer = new TaskCompletionSource<PrefetchedKv?>(TaskCreationOptions.RunContinuationsAsynchronously);
                pending = entry.Claimer.Task;
            }
        }
        if (parked is not null)
            return resident.TryTake(session, parked.Cache.TokensSeen) is { } cache ? parked with { Cache = cache } : null;
        entry.State.Claim();
        try
        {
            return await pending!.WaitAsync(ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // A result that comes later is dropped by the fetch; one that came as the wait was cancelled, here.
            if (!entry.Claimer!.TrySetResult(null) && pending!.Result is { } late) late.Cache.Dispose();
            throw;
        }
    }

    private List<(string, SequenceKvCache)> TakeExpired()
    {
        var now = _clock.GetUtcNow();
        var expired = new List<(string, SequenceKvCache)>();
        foreach (var (session, e) in _bySession.Where(kv => kv.Value.Parked is not null && kv.Value.Deadline <= now).ToList())
        {
            _bySession.Remove(session);
            expired.Add((session, e.Parked!.Cache));
        }
        return expired;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var e in _bySession.Values) e.Cancel.Cancel();
            _bySession.Clear();
        }
    }
}
