using Cluster.Engine.KvCache;

namespace Cluster.Engine.Scheduling;

/// <summary>
/// A decode worker's KV memory as a block pool (<see cref="KvBlockPool"/>, per-sequence tables in a
/// <see cref="KvCacheManager"/>), shared by the request handlers and the batch thread. A new sequence
/// takes blocks for the tokens it holds now, not for everything it may generate (vLLM's lazy
/// allocation): the batch grows its blocks step by step (<see cref="KvLease.TryGrow"/>) and, when the
/// pool is full, preempts the newest running sequence (<see cref="KvLease.Preempt"/>), which resumes by
/// recomputation when blocks are free again. What does not fit waits in a bounded first-in-first-out
/// queue (the head is admitted before anything behind it, and no new sequence is admitted while a
/// preempted one waits to resume, so nothing starves); beyond the bound the answer is
/// <see cref="KvAdmissionRefusedException"/> (RESOURCE_EXHAUSTED). Thread-safe.
/// </summary>
public sealed class KvAdmission
{
    private readonly object _lock = new();
    private readonly KvCacheManager _blocks;
    private readonly LinkedList<Waiter> _queue = new();
    private long _nextId, _refused, _preemptions;
    private int _peakBlocks, _suspended, _sequences;

    /// <param name="numBlocks">Blocks in the pool.</param>
    /// <param name="blockSize">Token slots per block.</param>
    /// <param name="blockBytes">Bytes of one block (K and V of every layer and KV head), for the gauges.</param>
    /// <param name="maxQueue">Sequences that may wait for room; one more is refused.</param>
    /// <param name="maxSequences">Sequences admitted at once, running or preempted (vLLM's max_num_seqs):
    /// past the batch size more would only take turns, each holding blocks and a stream.</param>
    /// <param name="headroom">Free blocks a new sequence must leave for each running one (0: none). With
    /// one, a sequence is admitted only while every running sequence can still take its next block, so
    /// admitting it does not force a preemption at the next block boundary (vLLM's watermark serves the
    /// same end): without it, 64 streams against a pool that holds 8 all start, and most are preempted
    /// with their streams and checkpoints open.</param>
    public KvAdmission(int numBlocks, int blockSize, long blockBytes, int maxQueue, int maxSequences = int.MaxValue, int headroom = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(headroom);
        Headroom = headroom;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxSequences);
        MaxSequences = maxSequences;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(numBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(maxQueue);
        _blocks = new KvCacheManager(new KvBlockPool(numBlocks, blockSize));
        BlockBytes = blockBytes;
        MaxQueue = maxQueue;
    }

    /// <summary>The blocks of <paramref name="budgetBytes"/> for a model's KV shape (fp32 K and V).</summary>
    public static KvAdmission ForBudget(long budgetBytes, Model.LlamaConfig c, int maxQueue, int maxSequences = int.MaxValue, int headroom = 0, int blockSize = 16) =>
        new(KvBlockPool.BlocksForBudget(budgetBytes, blockSize, c.Layers, c.KvHeads, c.HeadDim), blockSize,
            KvBlockPool.BlockBytes(blockSize, c.Layers, c.KvHeads, c.HeadDim), maxQueue, maxSequences, headroom);

    public int NumBlocks => _blocks.Pool.NumBlocks;
    public int BlockSize => _blocks.Pool.BlockSize;
    public long BlockBytes { get; }
    public int MaxQueue { get; }
    public int MaxSequences { get; }
    public int Headroom { get; }

    /// <summary>The whole pool in bytes (the <c>--kv-memory</c> budget rounded down to whole blocks).</summary>
    public long BudgetBytes => NumBlocks * BlockBytes;

    /// <summary>Bytes of the blocks held now (running sequences and kept caches).</summary>
    public long UsedBytes { get { lock (_lock) return (NumBlocks - _blocks.Pool.FreeBlocks) * BlockBytes; } }

    /// <summary>The most bytes ever held at once (never above the budget).</summary>
    public long PeakBytes { get { lock (_lock) return _peakBlocks * BlockBytes; } }

    /// <summary>Fraction of the pool's blocks in use (<c>llm_kv_cache_usage_ratio</c>).</summary>
    public double Usage { get { lock (_lock) return _blocks.Pool.Usage; } }

    /// <summary>New sequences waiting for room now.</summary>
    public int Waiting { get { lock (_lock) return _queue.Count; } }

    /// <summary>Preempted sequences waiting to resume now.</summary>
    public int Suspended { get { lock (_lock) return _suspended; } }

    /// <summary>Requests refused because the queue was full or they could never fit.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Sequences preempted so far (their blocks taken to let older ones grow).</summary>
    public long Preemptions => Interlocked.Read(ref _preemptions);

    /// <summary>Frees up to the given bytes of reclaimable holdings (caches kept for a next turn, which
    /// may be dropped at any time); called outside the lock before a request waits or a sequence is
    /// preempted.</summary>
    public Action<long>? Reclaim { get; set; }

    /// <summary>Blocks that <paramref name="tokens"/> slots take.</summary>
    public int BlocksFor(int tokens) => (tokens + BlockSize - 1) / BlockSize;

    /// <summary>
    /// Takes blocks for <paramref name="tokens"/> slots (what the sequence's cache holds when it joins),
    /// waiting in line while they do not fit. Dispose the lease to give them back. Cancelling the wait
    /// leaves the queue as if the request had never come.
    /// </summary>
    /// <exception cref="KvAdmissionRefusedException">More than the whole pool, or the queue is full.</exception>
    public async ValueTask<KvLease> AcquireAsync(int tokens, CancellationToken cancel = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        int blocks = BlocksFor(tokens);
        int shortfall;
        lock (_lock)
        {
            if (blocks > NumBlocks)
                throw Refuse($"this sequence's KV ({Mib(blocks * BlockBytes)}) exceeds the worker's whole KV budget ({Mib(BudgetBytes)}): shorten the prompt or use a bounded KV policy");
            shortfall = _sequences >= MaxSequences ? 0 : MayAdmitNow() ? blocks - _blocks.Pool.FreeBlocks : blocks;
        }
        // Room held by what can give it back at once (finished conversations' kept caches) goes first:
        // outside the lock, since giving it back frees leases here.
        if (shortfall > 0) Reclaim?.Invoke(shortfall * BlockBytes);
        Waiter waiter;
        lock (_lock)
        {
            if (MayAdmitNow() && _sequences < MaxSequences && TryTake(tokens, sequence: true) is { } lease) return lease;
            if (_queue.Count >= MaxQueue)
                throw Refuse($"decode worker busy: its KV budget ({Mib(BudgetBytes)}) is in use and {_queue.Count} requests already wait (the queue's bound); retry later");
            waiter = new Waiter(tokens);
            waiter.Node = _queue.AddLast(waiter);
        }
        using (cancel.Register(() => Cancel(waiter, cancel)))
            return await waiter.Admitted.Task.ConfigureAwait(false);
    }

    /// <summary>Takes blocks for <paramref name="tokens"/> slots only if they fit now with nobody waiting
    /// (what waits comes first); null otherwise. For optional holdings such as kept caches.</summary>
    public KvLease? TryAcquire(int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        lock (_lock) return MayAdmitNow() ? TryTake(tokens, sequence: false) : null;
    }

    private bool MayAdmitNow() => _queue.Count == 0 && _suspended == 0;

    private KvLease? TryTake(int tokens, bool sequence)
    {
        long id = ++_nextId;
        if (sequence && _blocks.BlocksNeeded(id, tokens) + Headroom * (_sequences - _suspended) > _blocks.Pool.FreeBlocks) return null;
        if (!_blocks.TryAllocate(id, tokens)) return null;
        NotePeak();
        if (sequence) _sequences++;
        return new KvLease(this, id, sequence);
    }

    private void NotePeak() => _peakBlocks = Math.Max(_peakBlocks, NumBlocks - _blocks.Pool.FreeBlocks);

    private KvAdmissionRefusedException Refuse(string message)
    {
        Interlocked.Increment(ref _refused);
        return new KvAdmissionRefusedException(message);
    }

    private void Cancel(Waiter waiter, CancellationToken cancel)
    {
        lock (_lock)
        {
            if (waiter.Node?.List is null) return; // admitted meanwhile: the lease is returned by the caller
            _queue.Remove(waiter.Node);
            AdmitFromQueue(); // the head may have been this one, blocking others that fit
        }
        waiter.Admitted.TrySetCanceled(cancel);
    }

    /// <summary>Admits waiters from the head while the head fits (strict order: a small request behind a
    /// large one waits, which is what keeps the large one from starving), and none while a preempted
    /// sequence waits to resume (it was admitted earlier). Under the lock.</summary>
    private void AdmitFromQueue()
    {
        while (_suspended == 0 && _sequences < MaxSequences && _queue.First is { } head && TryTake(head.Value.Tokens, sequence: true) is { } lease)
        {
            _queue.RemoveFirst();
            if (!head.Value.Admitted.TrySetResult(lease)) lease.Dispose();
        }
    }

    private void Release(long id, bool suspended, bool sequence)
    {
        _blocks.Free(id);
        if (suspended) _suspended--;
        if (sequence) _sequences--;
        AdmitFromQueue();
    }

    private static string Mib(long bytes) => $"{bytes / 1048576.0:F1} MiB";

    private sealed class Waiter(int tokens)
    {
        public int Tokens { get; } = tokens;
        public LinkedListNode<Waiter>? Node { get; set; }
        public TaskCompletionSource<KvLease> Admitted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>
    /// One sequence's blocks. The request handler that acquired it disposes it when the sequence ends;
    /// in between the batch thread grows it, preempts it and resumes it.
    /// </summary>
    public sealed class KvLease : IDisposable
    {
        private readonly KvAdmission _owner;
        private readonly bool _sequence; // counts against MaxSequences (a kept cache does not)
        private bool _released, _preempted;

        internal KvLease(KvAdmission owner, long id, bool sequence)
        {
            _owner = owner;
            Id = id;
            _sequence = sequence;
        }

        /// <summary>The sequence's id in the pool's block tables.</summary>
        public long Id { get; }

        /// <summary>Token slots its blocks hold (0 while preempted): the capacity its cache may have.</summary>
        public int Slots { get { lock (_owner._lock) return _owner._blocks.BlockTable(Id).Count * _owner.BlockSize; } }

        /// <summary>The block ids it holds, in order (tests).</summary>
        public IReadOnlyList<int> Blocks { get { lock (_owner._lock) return [.. _owner._blocks.BlockTable(Id)]; } }

        public bool IsPreempted { get { lock (_owner._lock) return _preempted; } }

        /// <summary>Blocks in the whole pool: a sequence that needs more can never run.</summary>
        public int PoolBlocks => _owner.NumBlocks;

        public int BlockSize => _owner.BlockSize;

        /// <summary>Blocks that <paramref name="slots"/> slots take.</summary>
        public int BlocksFor(int slots) => _owner.BlocksFor(slots);

        /// <summary>Makes its blocks cover <paramref name="slots"/> slots; false, taking none, when the pool
        /// cannot (the caller preempts someone). Kept caches are reclaimed before answering false.</summary>
        public bool TryGrow(int slots)
        {
            if (TryGrowLocked(slots, out int shortfall)) return true;
            _owner.Reclaim?.Invoke(shortfall * _owner.BlockBytes);
            return TryGrowLocked(slots, out _);
        }

        private bool TryGrowLocked(int slots, out int shortfall)
        {
            lock (_owner._lock)
            {
                if (_released || _preempted) throw new InvalidOperationException("the lease holds no blocks");
                var m = _owner._blocks;
                int more = slots - m.Tokens(Id);
                shortfall = 0;
                if (more <= 0) return true;
                if (m.TryAllocate(Id, more))
                {
                    _owner.NotePeak();
                    return true;
                }
                shortfall = m.BlocksNeeded(Id, more) - m.Pool.FreeBlocks;
                return false;
            }
        }

        /// <summary>Makes its blocks cover <paramref name="slots"/> slots only from blocks nobody needs: the
        /// pool's free blocks beyond the headroom every running sequence keeps, and none while a new or a
        /// preempted sequence waits for blocks (they come first). Never reclaims or preempts; false leaves
        /// the lease as it was.</summary>
        public bool TryGrowFromSpare(int slots)
        {
            lock (_owner._lock)
            {
                if (_released || _preempted) throw new InvalidOperationException("the lease holds no blocks");
                var m = _owner._blocks;
                int more = slots - m.Tokens(Id);
                if (more <= 0) return true;
                if (_owner._queue.Count > 0 || _owner._suspended > 0) return false;
                int running = _owner._sequences - _owner._suspended;
                if (m.BlocksNeeded(Id, more) + _owner.Headroom * running > m.Pool.FreeBlocks || !m.TryAllocate(Id, more)) return false;
                _owner.NotePeak();
                return true;
            }
        }

        /// <summary>Gives all its blocks back to make room for older sequences; until
        /// <see cref="TryResume"/>, no new sequence is admitted (the preempted one goes first).</summary>
        public void Preempt()
        {
            lock (_owner._lock)
            {
                if (_released || _preempted) throw new InvalidOperationException("the lease holds no blocks");
                _preempted = true;
                _owner._suspended++;
                _owner._blocks.Preempt(Id);
            }
            Interlocked.Increment(ref _owner._preemptions);
        }

        /// <summary>Takes blocks for <paramref name="slots"/> slots again after a preemption; false, taking
        /// none, while they do not fit. Kept caches are reclaimed before answering false.</summary>
        public bool TryResume(int slots)
        {
            if (TryResumeLocked(slots, out int shortfall)) return true;
            if (shortfall > 0) _owner.Reclaim?.Invoke(shortfall * _owner.BlockBytes);
            return TryResumeLocked(slots, out _);
        }

        private bool TryResumeLocked(int slots, out int shortfall)
        {
            lock (_owner._lock)
            {
                if (_released || !_preempted) throw new InvalidOperationException("the lease is not preempted");
                // The same headroom as a new sequence: resumed into a pool the running ones are about to
                // fill, it would be preempted again at once.
                var m = _owner._blocks;
                int running = _owner._sequences - _owner._suspended;
                shortfall = m.BlocksNeeded(Id, slots) + _owner.Headroom * running - m.Pool.FreeBlocks;
                if (shortfall > 0 || !m.TryAllocate(Id, slots)) return false;
                _preempted = false;
                _owner._suspended--;
                _owner.NotePeak();
                _owner.AdmitFromQueue(); // the last one back lets new sequences in again
                return true;
            }
        }

        /// <summary>Gives the blocks back (once) and admits what waits.</summary>
        public void Dispose()
        {
            lock (_owner._lock)
            {
                if (_released) return;
                _released = true;
                _owner.Release(Id, _preempted, _sequence);
            }
        }
    }
}

/// <summary>A decode worker cannot take the sequence now (queue full) or ever (larger than its budget).</summary>
public sealed class KvAdmissionRefusedException(string message) : Exception(message);
