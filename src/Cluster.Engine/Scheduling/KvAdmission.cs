namespace Cluster.Engine.Scheduling;

/// <summary>
/// Admission of sequences into a decode worker's KV memory: each sequence reserves the KV it can grow
/// to (its cache's capacity: the tokens it holds plus every token it may still add, or its policy's
/// budget) before its cache is loaded, and gives it back when it ends. What does not fit waits in a
/// bounded first-in-first-out queue (TGI's max-batch-total-tokens rule): the head of the queue is
/// admitted before anything behind it, so no request starves, and memory never exceeds the budget.
/// A full queue is an answer, not a failure: <see cref="KvAdmissionRefusedException"/> (RESOURCE_EXHAUSTED).
/// Thread-safe.
/// </summary>
public sealed class KvAdmission
{
    private readonly object _lock = new();
    private readonly LinkedList<Waiter> _queue = new();
    private long _used, _peak;
    private long _refused;

    /// <param name="budgetBytes">KV bytes that admitted sequences may hold together.</param>
    /// <param name="maxQueue">Sequences that may wait for room; one more is refused.</param>
    public KvAdmission(long budgetBytes, int maxQueue)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budgetBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(maxQueue);
        BudgetBytes = budgetBytes;
        MaxQueue = maxQueue;
    }

    public long BudgetBytes { get; }
    public int MaxQueue { get; }

    /// <summary>Bytes reserved by admitted sequences now.</summary>
    public long UsedBytes { get { lock (_lock) return _used; } }

    /// <summary>The most bytes ever reserved at once (never above the budget).</summary>
    public long PeakBytes { get { lock (_lock) return _peak; } }

    /// <summary>Sequences waiting for room now.</summary>
    public int Waiting { get { lock (_lock) return _queue.Count; } }

    /// <summary>Requests refused because the queue was full or they could never fit.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>
    /// Reserves <paramref name="bytes"/>, waiting in line while they do not fit. Dispose the result to
    /// give them back. Cancelling the wait leaves the queue as if the request had never come.
    /// </summary>
    /// <exception cref="KvAdmissionRefusedException">More than the whole budget, or the queue is full.</exception>
    public async ValueTask<Reservation> AcquireAsync(long bytes, CancellationToken cancel = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long shortfall;
        lock (_lock)
        {
            if (bytes > BudgetBytes)
                throw Refuse($"this sequence's KV ({Mib(bytes)}) exceeds the worker's whole KV budget ({Mib(BudgetBytes)}): lower max_tokens, shorten the prompt or use a bounded KV policy");
            shortfall = _queue.Count == 0 ? _used + bytes - BudgetBytes : bytes;
        }
        // Room held by what can give it back at once (finished conversations' kept caches) goes first:
        // outside the lock, since giving it back releases reservations here.
        if (shortfall > 0) Reclaim?.Invoke(shortfall);
        Waiter waiter;
        lock (_lock)
        {
            if (_queue.Count == 0 && _used + bytes <= BudgetBytes)
            {
                Take(bytes);
                return new Reservation(this, bytes);
            }
            if (_queue.Count >= MaxQueue)
                throw Refuse($"decode worker busy: its KV budget ({Mib(BudgetBytes)}) is in use and {_queue.Count} requests already wait (the queue's bound); retry later");
            waiter = new Waiter(bytes);
            waiter.Node = _queue.AddLast(waiter);
        }
        using (cancel.Register(() => Cancel(waiter, cancel)))
            await waiter.Admitted.Task.ConfigureAwait(false);
        return new Reservation(this, bytes);
    }

    /// <summary>Frees up to the given bytes of reclaimable reservations (e.g. caches kept for a next turn
    /// that may be dropped at any time); called, outside the lock, before a request would wait.</summary>
    public Action<long>? Reclaim { get; set; }

    /// <summary>Reserves <paramref name="bytes"/> only if they fit now with nobody waiting (what waits
    /// comes first); null otherwise. For optional holdings such as kept caches.</summary>
    public Reservation? TryAcquire(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_lock)
        {
            if (_queue.Count > 0 || _used + bytes > BudgetBytes) return null;
            Take(bytes);
            return new Reservation(this, bytes);
        }
    }

    private KvAdmissionRefusedException Refuse(string message)
    {
        Interlocked.Increment(ref _refused);
        return new KvAdmissionRefusedException(message);
    }

    private void Take(long bytes)
    {
        _used += bytes;
        _peak = Math.Max(_peak, _used);
    }

    private void Cancel(Waiter waiter, CancellationToken cancel)
    {
        lock (_lock)
        {
            if (waiter.Node?.List is null) return; // admitted meanwhile: the reservation is returned by the caller
            _queue.Remove(waiter.Node);
            AdmitFromQueue(); // the head may have been this one, blocking others that fit
        }
        waiter.Admitted.TrySetCanceled(cancel);
    }

    private void Release(long bytes)
    {
        lock (_lock)
        {
            _used -= bytes;
            AdmitFromQueue();
        }
    }

    /// <summary>Admits waiters from the head while the head fits (strict order: a small request behind a
    /// large one waits, which is what keeps the large one from starving).</summary>
    private void AdmitFromQueue()
    {
        while (_queue.First is { } head && _used + head.Value.Bytes <= BudgetBytes)
        {
            _queue.RemoveFirst();
            Take(head.Value.Bytes);
            head.Value.Admitted.TrySetResult();
        }
    }

    private static string Mib(long bytes) => $"{bytes / 1048576.0:F1} MiB";

    private sealed class Waiter(long bytes)
    {
        public long Bytes { get; } = bytes;
        public LinkedListNode<Waiter>? Node { get; set; }
        public TaskCompletionSource Admitted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Bytes held by one admitted sequence; disposing returns them (once).</summary>
    public sealed class Reservation(KvAdmission owner, long bytes) : IDisposable
    {
        private int _released;

        public long Bytes { get; } = bytes;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) owner.Release(Bytes);
        }
    }
}

/// <summary>A decode worker cannot take the sequence now (queue full) or ever (larger than its budget).</summary>
public sealed class KvAdmissionRefusedException(string message) : Exception(message);
