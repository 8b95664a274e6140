namespace Cluster.Engine.Kernels;

/// <summary>Work split into numbered parts; <see cref="Run"/> may be called for different parts on
/// different threads at once. Implementations carry their arguments in fields, set before each use,
/// so a fork/join allocates nothing (a closure per call did, and Parallel.For's own state).</summary>
internal interface IPartedWork
{
    void Run(int part);
}

/// <summary>
/// A fork/join team of <c>threads - 1</c> dedicated threads plus the caller, for the many short
/// parallel sections of a decode step (a few hundred per step: every matrix product and the attention
/// of every layer). Parts are claimed dynamically, the caller takes parts too and then waits for the
/// stragglers. Unlike Parallel.For it allocates nothing per call. One caller at a time: a second
/// thread that finds the team busy (<see cref="TryAcquire"/> false) must run its work some other way.
/// </summary>
internal sealed class WorkerTeam : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _wake;
    private IPartedWork? _work;
    // One word, changed atomically: generation (bits 40-63, one per call), part count (20-39) and the
    // next unclaimed part (0-19). A thread woken late for an earlier call sees another generation or
    // no part left, so it can never claim a part of a call it did not read the work of.
    private long _state;
    private int _done, _busy, _generation;
    private volatile bool _stopping;
    private Exception? _error;
    private const int PartBits = 20;
    private const long PartMask = (1L << PartBits) - 1;

    /// <summary>Most parts one call may have.</summary>
    public const int MaxParts = (int)PartMask;

    public WorkerTeam(int threads)
    {
        Size = Math.Max(1, threads);
        _threads = new Thread[Size - 1];
        _wake = new SemaphoreSlim[Size - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            _wake[i] = new SemaphoreSlim(0);
            int index = i;
            _threads[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"cpu-kernel-{i + 1}" };
            _threads[i].Start();
        }
    }

    /// <summary>Threads that run parts, the caller included.</summary>
    public int Size { get; }

    /// <summary>Takes the team for one call of <see cref="Run"/>; false when another thread holds it
    /// (it then has to run its work some other way). Set the work's fields only after this.</summary>
    public bool TryAcquire() => _threads.Length > 0 && Interlocked.CompareExchange(ref _busy, 1, 0) == 0;

    public void Release() => Volatile.Write(ref _busy, 0);

    /// <summary>Runs parts 0..<paramref name="parts"/>-1 of <paramref name="work"/> on the team and
    /// returns when all have finished. The caller holds the team (<see cref="TryAcquire"/>).</summary>
    public void Run(IPartedWork work, int parts)
    {
        if (parts > MaxParts) throw new ArgumentOutOfRangeException(nameof(parts), $"at most {MaxParts} parts");
        if (Volatile.Read(ref _busy) != 1) throw new InvalidOperationException("acquire the team first");
        if (parts <= 1)
        {
            if (parts == 1) work.Run(0);
            return;
        }
        long gen = _generation = (_generation + 1) & 0xFFFFFF;
        _work = work;
        _done = 0;
        _error = null;
        // Publishes the fields above: a part can only be claimed after this write.
        Volatile.Write(ref _state, gen << (2 * PartBits) | (long)parts << PartBits);
        int helpers = Math.Min(_threads.Length, parts - 1);
        for (int i = 0; i < helpers; i++) _wake[i].Release();
        RunParts(gen);
        var spin = new SpinWait();
        while (Volatile.Read(ref _done) < parts) spin.SpinOnce(sleep1Threshold: -1);
        _work = null;
        if (_error is { } e) throw new AggregateException(e);
    }

    private void RunParts(long gen)
    {
        while (true)
        {
            long v = Volatile.Read(ref _state);
            if (v >> (2 * PartBits) != gen) return;
            int parts = (int)(v >> PartBits & PartMask), part = (int)(v & PartMask);
            if (part >= parts) return;
            if (Interlocked.CompareExchange(ref _state, v + 1, v) != v) continue;
            // Claimed a part of a call in progress: its work stays set until every part is done.
            try
            {
                Volatile.Read(ref _work)!.Run(part);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _error, e, null);
            }
            Interlocked.Increment(ref _done);
        }
    }

    /// <summary>How long a helper keeps polling for the next call before it blocks: the parallel
    /// sections of a decode step follow each other within microseconds, and waking a blocked thread
    /// costs about as much as a small product.</summary>
    private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 10_000; // 100 µs

    private void Loop(int index)
    {
        while (true)
        {
            _wake[index].Wait();
            if (_stopping) return;
            RunParts(Volatile.Read(ref _state) >> (2 * PartBits));
            long idleSince = System.Diagnostics.Stopwatch.GetTimestamp();
            while (System.Diagnostics.Stopwatch.GetTimestamp() - idleSince < SpinTicks && !_stopping)
            {
                long v = Volatile.Read(ref _state);
                if ((v & PartMask) < (v >> PartBits & PartMask))
                {
                    RunParts(v >> (2 * PartBits));
                    idleSince = System.Diagnostics.Stopwatch.GetTimestamp();
                }
                else Thread.SpinWait(20);
            }
            // Wake-ups for the calls served while polling are stale now. Dropping one that arrived just
            // after the last poll is harmless: the caller runs every part no helper claims. Dropping
            // Dispose's is not: it is told by _stopping, checked after the drain (a check only after the
            // next Wait blocked forever when the drain had eaten Dispose's wake-up, hanging Dispose's Join).
            while (_wake[index].Wait(0)) { }
            if (_stopping) return;
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var w in _wake) w.Release();
        foreach (var t in _threads) t.Join();
        foreach (var w in _wake) w.Dispose();
    }
}
