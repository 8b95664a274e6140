using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Cluster.Engine.Generation;
using Cluster.Engine.Model;

namespace Cluster.Engine.Scheduling;

/// <summary>
/// Continuous batching (Orca, Yu et al. 2022): sequences join and leave between steps, and each step
/// runs every running sequence's next token through one <see cref="LlamaModel.ForwardBatch"/>, so the
/// weights are read once per step however many sequences share it. One thread owns the model;
/// callers hand sequences in with <see cref="Add"/> and read their chunks from a channel. A sequence
/// whose caller cancels is aborted and freed before the next step. Work that must own the model for
/// its own passes (a beam search: its beams interact every step) joins as a stepped job
/// (<see cref="AddStepped"/>): one of its steps runs between two batched steps.
/// <para>
/// A sequence added with a lease of KV blocks (<see cref="KvAdmission.KvLease"/>) is paged, as vLLM v1's
/// scheduler pages its requests: before each step it takes the blocks its next token needs, its cache
/// holds exactly those blocks, and when the pool has none left the newest running sequence is preempted
/// and later recomputed (ContinuousBatcher.Preemption.cs).
/// </para>
/// </summary>
public sealed partial class ContinuousBatcher : IDisposable
{
    private readonly LlamaModel _model;
    private readonly int _maxBatch;
    private readonly Channel<Entry?> _incoming = Channel.CreateUnbounded<Entry?>(new UnboundedChannelOptions { SingleReader = true }); // null: a job arrived
    private readonly List<Entry> _running = [];
    private readonly List<SteppedJob> _jobs = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private readonly float[] _logits;
    private int _runningCount;

    /// <param name="afterStep">Called on the batch thread after every step with the batch size and its
    /// duration (metrics).</param>
    /// <param name="afterToken">Called on the batch thread after each sampled chunk is written, the last
    /// one included, and before that token runs or the sequence is freed: the cache then holds every
    /// token but the newest (the moment a checkpoint is consistent).</param>
    /// <param name="preempted">Called on the batch thread when a paged sequence is preempted, with its
    /// state: whatever the caller holds of its KV outside the pool may go too (it is recomputed).</param>
    public ContinuousBatcher(LlamaModel model, int maxBatch, Action<int, TimeSpan>? afterStep = null, Action<SequenceGeneration, GenerationChunk, object?>? afterToken = null,
        Action<object?>? preempted = null)
    {
        _preemptedHook = preempted;
        if (maxBatch < 1 || maxBatch > model.MaxChunk) throw new ArgumentOutOfRangeException(nameof(maxBatch), $"max batch must be 1..{model.MaxChunk}, got {maxBatch}");
        _model = model;
        _maxBatch = maxBatch;
        _afterStep = afterStep;
        _afterToken = afterToken;
        _logits = new float[(long)maxBatch * model.Config.VocabSize];
        _thread = new Thread(Run) { IsBackground = true, Name = "decode-batch" };
        _thread.Start();
    }

    private readonly Action<int, TimeSpan>? _afterStep;
    private readonly Action<SequenceGeneration, GenerationChunk, object?>? _afterToken;

    /// <summary>Sequences in the batch now (joined and not yet finished or aborted).</summary>
    public int Running => Volatile.Read(ref _runningCount);

    /// <summary>
    /// Adds a sequence. The batch runs <paramref name="feed"/> (tokens its cache lacks, e.g. the token
    /// prefill sampled; empty when its logits are set) one token a step to get its next logits, then
    /// samples it step by step. The channel completes after the chunk with a finish reason, or with
    /// the exception that ended it. Until it completes the batch may be running a step on the sequence's
    /// cache: a caller that stops reading early cancels and waits for the completion before freeing it.
    /// </summary>
    /// <param name="state">Passed back to the afterToken hook (e.g. the request it belongs to).</param>
    /// <param name="lease">The sequence's KV blocks (covering what its cache holds now); null runs it
    /// unpaged, its cache growing by doubling. The caller disposes the lease after the channel completes.</param>
    /// <param name="recompute">With a lease: builds, on the batch thread, a fresh cache (policy set) holding
    /// what the sequence's cache held before its first generated token, so that feeding it every generated
    /// token one per step rebuilds the cache exactly; it makes the sequence preemptible. Null: never preempted.</param>
    public ChannelReader<GenerationChunk> Add(SequenceGeneration sequence, IReadOnlyList<int> feed, CancellationToken cancel, object? state = null,
        KvAdmission.KvLease? lease = null, Func<Cluster.Engine.KvCache.SequenceKvCache>? recompute = null)
    {
        var output = Channel.CreateUnbounded<GenerationChunk>(new UnboundedChannelOptions { SingleWriter = true });
        var entry = new Entry(sequence, feed.ToArray(), output, cancel, state) { Lease = lease, Recompute = lease is null ? null : recompute };
        if (!_incoming.Writer.TryWrite(entry)) throw new ObjectDisposedException(nameof(ContinuousBatcher));
        return output.Reader;
    }

    /// <summary>
    /// Adds work that runs its own forward passes one step at a time (e.g. <see cref="Generation.BeamSearch.Steps"/>):
    /// each loop of the batch thread advances it by one step, so the running sequences go on between
    /// its steps. The channel receives the chunks its steps yield and completes when it ends, or with
    /// the exception that ended it. The job watches its own cancellation (a beam search aborts its beams).
    /// </summary>
    public ChannelReader<GenerationChunk> AddStepped(IEnumerable<IReadOnlyList<GenerationChunk>> steps)
    {
        var output = Channel.CreateUnbounded<GenerationChunk>(new UnboundedChannelOptions { SingleWriter = true });
        if (!_incomingJobs.Writer.TryWrite(new SteppedJob(steps, output))) throw new ObjectDisposedException(nameof(ContinuousBatcher));
        _incoming.Writer.TryWrite(null); // wakes the batch thread
        return output.Reader;
    }

    /// <summary>
    /// Runs <paramref name="work"/> on the batch thread between two batched steps and returns its result:
    /// the way for other work on this batcher's model (a KV rebuild, a conversation turn's prompt) to run
    /// passes without racing the batch, since the model's run state is shared and not thread-safe. The
    /// running sequences wait for it, as they wait for a stepped job's step.
    /// </summary>
    public async Task<T> RunExclusiveAsync<T>(Func<T> work, CancellationToken cancel = default)
    {
        var result = new StrongBox<T>();
        await foreach (var _ in AddStepped(OneStep(work, result, cancel)).ReadAllAsync(CancellationToken.None)) { }
        return result.Value!;

        static IEnumerable<IReadOnlyList<GenerationChunk>> OneStep(Func<T> work, StrongBox<T> result, CancellationToken cancel)
        {
            cancel.ThrowIfCancellationRequested();
            result.Value = work();
            yield break;
        }
    }

    private readonly Channel<SteppedJob> _incomingJobs = Channel.CreateUnbounded<SteppedJob>(new UnboundedChannelOptions { SingleReader = true });

    /// <summary>Advances every stepped job by one step; a job that ends or throws leaves.</summary>
    private void StepJobs()
    {
        for (int i = _jobs.Count - 1; i >= 0; i--)
        {
            var job = _jobs[i];
            try
            {
                job.Steps ??= job.Source.GetEnumerator();
                if (job.Steps.MoveNext())
                {
                    foreach (var chunk in job.Steps.Current) job.Output.Writer.TryWrite(chunk);
                    continue;
                }
                job.Output.Writer.TryComplete();
            }
            catch (Exception ex)
            {
                // A job's failure is its own: the batch thread and the other work go on.
                job.Output.Writer.TryComplete(ex);
            }
            job.Steps?.Dispose();
            _jobs.RemoveAt(i);
        }
    }

    private void Run()
    {
        var ct = _stop.Token;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                while (_incoming.Reader.TryRead(out var entry))
                    if (entry is not null) Admit(entry);
                while (_incomingJobs.Reader.TryRead(out var job)) _jobs.Add(job);
                DropCancelled();
                ResumePreempted();
                if (_running.Count == 0 && _jobs.Count == 0)
                {
                    // Idle: sleep until a sequence or a job arrives; a preempted sequence waits for blocks
                    // that a finished stream's handler gives back off this thread, so it polls.
                    var arrival = _incoming.Reader.WaitToReadAsync(ct).AsTask();
                    if (_preempted.Count == 0) arrival.Wait(ct);
                    else arrival.Wait(5, ct);
                    continue;
                }
                StepJobs();
                if (_running.Count > 0) Step();
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        foreach (var e in _running) Finish(e, e.Sequence.Abort());
        foreach (var e in _preempted) Finish(e, e.Sequence.Abort());
        while (_incoming.Reader.TryRead(out var e))
            if (e is not null) Finish(e, e.Sequence.Abort());
        foreach (var job in _jobs) { job.Steps?.Dispose(); job.Output.Writer.TryComplete(new ObjectDisposedException(nameof(ContinuousBatcher))); }
        while (_incomingJobs.Reader.TryRead(out var j)) j.Output.Writer.TryComplete(new ObjectDisposedException(nameof(ContinuousBatcher)));
    }

    /// <summary>A joining sequence enters the batch at once. Its feed (several tokens when restarting
    /// from a checkpoint) then runs inside the batched steps, in segments where that is exact and else one
    /// token per step as the original decode ran them (<see cref="PlanRows"/>), so that a policy evicts
    /// exactly as it did then (the restarted stream is the same token for token) while the running streams
    /// go on instead of waiting for the catch-up. With nothing to feed, its logits are already there and
    /// it samples at once.</summary>
    private void Admit(Entry e)
    {
        if (e.Cancel.IsCancellationRequested) { Finish(e, e.Sequence.Abort()); return; }
        e.Order = ++_admitted;
        if (e.Lease is not null) FitToLease(e);
        if (e.Feed.Length == 0)
        {
            try
            {
                if (Emit(e, e.Sequence.Step(TimeSpan.Zero))) return;
            }
            catch (Exception ex)
            {
                Fail(e, ex); // sampling or its hook failed: this sequence ends, the batch thread goes on
                return;
            }
        }
        _running.Add(e);
        Interlocked.Increment(ref _runningCount);
    }

    private void DropCancelled()
    {
        for (int i = _running.Count - 1; i >= 0; i--)
        {
            var e = _running[i];
            if (!e.Cancel.IsCancellationRequested) continue;
            Remove(i);
            Finish(e, e.Sequence.Abort());
        }
        for (int i = _preempted.Count - 1; i >= 0; i--)
        {
            var e = _preempted[i];
            if (!e.Cancel.IsCancellationRequested) continue;
            _preempted.RemoveAt(i);
            Finish(e, e.Sequence.Abort());
        }
    }

    // Reused by every step, so that a steady-state step allocates nothing but the chunks it streams.
    private readonly List<Entry> _batch = [];
    private int[] _lengths = [];

    /// <summary>
    /// How many tokens each sequence of the step runs: one each, and the rows left in the pass go to
    /// sequences catching up (a restarted or preempted stream re-running its tokens), several of their fed
    /// tokens in one segment, as vLLM's scheduler lets computed tokens catch up under a token budget. Only
    /// where that is exact, i.e. the tokens come out bit for bit as one per step: the pass stays within the
    /// model's row-exact size (<see cref="LlamaModel.ExactRows"/>), and a bounded policy's cache keeps the
    /// whole segment under its budget (one token at a time it would evict in between, all at once not).
    /// </summary>
    private void PlanRows(List<Entry> batch)
    {
        int spare = Math.Min(_maxBatch, _model.ExactRows) - batch.Count;
        foreach (var e in batch)
        {
            e.Take = 1;
            if (spare <= 0 || e.Fed >= e.Feed.Length) continue;
            var cache = e.Sequence.Cache;
            int underBudget = cache.Policy.Budget is int budget ? budget - cache.MaxLength() : int.MaxValue;
            int more = Math.Min(Math.Min(e.Feed.Length - e.Fed, underBudget) - 1, spare);
            if (more <= 0) continue;
            e.Take += more;
            spare -= more;
        }
    }
    private readonly List<Cluster.Engine.KvCache.SequenceKvCache> _caches = [];
    private int[] _tokens = [];

    private void Step()
    {
        // Longer than the batch limit: run the first ones, then rotate them to the back (fairness).
        int n = Math.Min(_maxBatch, _running.Count);
        var batch = _batch;
        batch.Clear();
        for (int i = 0; i < n; i++) batch.Add(_running[i]);
        if (_running.Count > n)
        {
            _running.RemoveRange(0, n);
            _running.AddRange(batch);
        }
        PlanRows(batch);
        ReserveBlocks(batch);
        if (batch.Count == 0) return;
        // The per-sequence part first: one sequence that cannot take its token (its policy or cache
        // refuses) ends alone, with its reason, and the others run.
        for (int i = batch.Count - 1; i >= 0; i--)
        {
            var e = batch[i];
            try
            {
                Cluster.Engine.KvCache.KvRoom.Make(_model, e.Sequence.Cache, e.Take);
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
            {
                batch.RemoveAt(i);
                Drop(e, ex);
            }
        }
        if (batch.Count == 0) return;
        // A sequence catching up runs its next fed tokens; the others their last sampled one.
        if (_tokens.Length < _maxBatch) _tokens = new int[_maxBatch];
        if (_lengths.Length < _maxBatch) _lengths = new int[_maxBatch];
        _caches.Clear();
        int rows = 0;
        for (int i = 0; i < batch.Count; i++)
        {
            var e = batch[i];
            if (e.Fed < e.Feed.Length) e.Feed.AsSpan(e.Fed, e.Take).CopyTo(_tokens.AsSpan(rows));
            else _tokens[rows] = e.Sequence.Pending!.Value;
            _lengths[i] = e.Take;
            rows += e.Take;
            _caches.Add(e.Sequence.Cache);
        }
        long started = Stopwatch.GetTimestamp();
        try
        {
            _model.ForwardSegments(_tokens.AsSpan(0, rows), _caches, _lengths.AsSpan(0, batch.Count), _logits);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            // Past the per-sequence checks, a failure belongs to the pass itself: every sequence in it
            // has a half-written cache, so all of them end with the reason.
            foreach (var e in batch) Drop(e, ex);
            return;
        }
        finally
        {
            _caches.Clear();
        }
        var elapsed = Stopwatch.GetElapsedTime(started);
        int vocab = _model.Config.VocabSize;
        int size = batch.Count;
        for (int i = 0, row = 0; i < size; row += batch[i].Take, i++)
        {
            var e = batch[i];
            // Mid catch-up the logits are not wanted: only the last fed token's predict the next one.
            if (e.Fed < e.Feed.Length && (e.Fed += e.Take) < e.Feed.Length) continue;
            _logits.AsSpan((row + e.Take - 1) * vocab, vocab).CopyTo(e.Sequence.Logits);
            try
            {
                if (!Emit(e, e.Sequence.Step(elapsed))) continue;
            }
            catch (Exception ex)
            {
                // Sampling or its hook failed for this sequence alone: it ends with the reason, the batch
                // thread and the other sequences go on.
                Drop(e, ex);
                continue;
            }
            _running.Remove(e);
            Interlocked.Decrement(ref _runningCount);
        }
        batch.Clear();
        _afterStep?.Invoke(size, elapsed);
    }

    /// <summary>Writes a chunk; true when it ended the sequence (which is then completed and freed).</summary>
    private bool Emit(Entry e, GenerationChunk chunk)
    {
        e.Output.Writer.TryWrite(chunk);
        _afterToken?.Invoke(e.Sequence, chunk, e.State);
        if (chunk.Finish is null) return false;
        e.Output.Writer.TryComplete();
        e.Sequence.Dispose();
        return true;
    }

    /// <summary>Takes a running sequence out of the batch and fails it.</summary>
    private void Drop(Entry e, Exception ex)
    {
        _running.Remove(e);
        Interlocked.Decrement(ref _runningCount);
        Fail(e, ex);
    }

    private void Remove(int index)
    {
        _running.RemoveAt(index);
        Interlocked.Decrement(ref _runningCount);
    }

    private static void Finish(Entry e, GenerationChunk last)
    {
        e.Output.Writer.TryWrite(last);
        e.Output.Writer.TryComplete();
        e.Sequence.Dispose();
    }

    private static void Fail(Entry e, Exception ex)
    {
        e.Output.Writer.TryComplete(ex);
        e.Sequence.Dispose();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _incoming.Writer.TryComplete();
        _incomingJobs.Writer.TryComplete();
        _thread.Join();
        _stop.Dispose();
    }

    private sealed class SteppedJob(IEnumerable<IReadOnlyList<GenerationChunk>> source, Channel<GenerationChunk> output)
    {
        public IEnumerable<IReadOnlyList<GenerationChunk>> Source { get; } = source;
        public Channel<GenerationChunk> Output { get; } = output;
        public IEnumerator<IReadOnlyList<GenerationChunk>>? Steps { get; set; }
    }

    private sealed class Entry(SequenceGeneration sequence, int[] feed, Channel<GenerationChunk> output, CancellationToken cancel, object? state)
    {
        public SequenceGeneration Sequence { get; } = sequence;

        /// <summary>Tokens its cache lacks, run one per step before it samples (after a preemption: every
        /// generated token, on the recomputed prefix).</summary>
        public int[] Feed { get; set; } = feed;

        public Channel<GenerationChunk> Output { get; } = output;
        public CancellationToken Cancel { get; } = cancel;
        public object? State { get; } = state;

        /// <summary>Tokens of <see cref="Feed"/> that have run.</summary>
        public int Fed { get; set; }

        /// <summary>Tokens it runs in the current step (several only while catching up).</summary>
        public int Take { get; set; } = 1;

        /// <summary>Its KV blocks (paged), or null.</summary>
        public KvAdmission.KvLease? Lease { get; init; }

        /// <summary>Rebuilds its cache's prefix after a preemption; null: not preemptible.</summary>
        public Func<Cluster.Engine.KvCache.SequenceKvCache>? Recompute { get; init; }

        /// <summary>When it first joined (1, 2, ...): the newest running sequence is preempted first.</summary>
        public long Order { get; set; }

        /// <summary>Slots its cache used when preempted: the blocks it takes back to resume.</summary>
        public int SlotsAtPreempt { get; set; }
    }
}
