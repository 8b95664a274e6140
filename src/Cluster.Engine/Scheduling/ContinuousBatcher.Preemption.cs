using Cluster.Engine.KvCache;

namespace Cluster.Engine.Scheduling;

/// <summary>
/// The paged part of the batch, after vLLM v1's scheduler (vllm/v1/core/sched/scheduler.py): there is
/// no separate prefill or decode phase, only steps in which every scheduled sequence takes the KV blocks
/// for its next token. "No room" is a normal answer: the newest running sequence is preempted (its
/// blocks and its cache are dropped; its <see cref="Generation.SequenceGeneration"/> keeps the sampled
/// tokens, the sampling state and the stop state) and waits, ahead of any new sequence, until its blocks
/// fit again. It then resumes by recomputation: its cache's prefix is rebuilt as it was made and every
/// generated token runs again one per step, through the same catch-up feed as a restarted stream, so the
/// cache, and with it every later token, is what it would have been. Nothing is emitted while it catches
/// up: the chunks already streamed are not repeated.
/// </summary>
public sealed partial class ContinuousBatcher
{
    // Preempted sequences, oldest first: the oldest resumes first.
    private readonly List<Entry> _preempted = [];
    private readonly Action<object?>? _preemptedHook;
    private long _admitted;

    /// <summary>Sequences preempted and waiting to resume (tests).</summary>
    public int Preempted => Volatile.Read(ref _preemptedCount);

    private int _preemptedCount;

    /// <summary>Gives every paged sequence in <paramref name="batch"/> the blocks for its next tokens,
    /// preempting the newest running sequences while the pool cannot; preempted and failed sequences
    /// leave the batch.</summary>
    private void ReserveBlocks(List<Entry> batch)
    {
        for (int i = 0; i < batch.Count; i++)
        {
            var e = batch[i];
            if (e.Lease is null) continue;
            var cache = e.Sequence.Cache;
            // A bounded policy evicts to its budget before the token lands: its cache stops growing there.
            int slots = Math.Min(cache.MaxLength() + e.Take, cache.Policy.Budget ?? int.MaxValue);
            if (e.Lease.BlocksFor(slots) > e.Lease.PoolBlocks)
            {
                batch.RemoveAt(i--);
                Drop(e, new KvAdmissionRefusedException($"this sequence's KV ({slots} tokens) outgrew the worker's whole KV budget ({e.Lease.PoolBlocks} blocks of {e.Lease.BlockSize}): lower max_tokens or use a bounded KV policy"));
                continue;
            }
            // A paged cache is one array per layer, so growing it copies the whole cache: block by block
            // that is a copy of the cache every 16 tokens (83 MB at 1,800 tokens of SmolLM2-135M). While the
            // pool has blocks to spare, take what the sequence may still need, up to half again its size
            // (a short answer grows once, a long one geometrically; an eighth, as before, made a 400-token
            // answer copy its cache 8 times, 1.9 % of a decode worker's CPU); when it has not, exactly what is needed.
            if (slots > e.Lease.Slots)
                e.Lease.TryGrowFromSpare(Math.Min(slots + Math.Max(1, Math.Min(e.Sequence.TokensLeft, slots / 2)), Math.Min(cache.Policy.Budget ?? int.MaxValue, _model.Config.MaxPositions)));
            bool scheduled = true;
            while (!e.Lease.TryGrow(slots))
            {
                var victim = NewestPreemptible();
                if (victim is null)
                {
                    // Nothing can make room (the rest cannot be recomputed): this one ends, not the worker.
                    batch.RemoveAt(i--);
                    Drop(e, new KvAdmissionRefusedException("the worker's KV pool is full and nothing in it can be preempted; retry later"));
                    scheduled = false;
                    break;
                }
                int at = batch.IndexOf(victim);
                if (at >= 0)
                {
                    batch.RemoveAt(at);
                    if (at <= i) i--;
                }
                Preempt(victim);
                if (victim == e)
                {
                    scheduled = false;
                    break;
                }
            }
            if (scheduled) FitToLease(e);
        }
    }

    /// <summary>The running sequence admitted last that can be recomputed (vLLM preempts the tail of its
    /// running queue: the newest has the least work to redo and the oldest keeps going).</summary>
    private Entry? NewestPreemptible()
    {
        Entry? newest = null;
        foreach (var e in _running)
            if (e.Recompute is not null && (newest is null || e.Order > newest.Order)) newest = e;
        return newest;
    }

    private void Preempt(Entry e)
    {
        _running.Remove(e);
        Interlocked.Decrement(ref _runningCount);
        var cache = e.Sequence.Cache;
        e.SlotsAtPreempt = cache.MaxLength();
        e.Lease!.Preempt();
        cache.Dispose(); // the memory goes with the blocks
        _preemptedHook?.Invoke(e.State);
        int at = _preempted.FindIndex(p => p.Order > e.Order);
        _preempted.Insert(at < 0 ? _preempted.Count : at, e);
        Interlocked.Increment(ref _preemptedCount);
    }

    /// <summary>Resumes preempted sequences, oldest first, while the blocks they held fit: each gets a
    /// recomputed prefix and feeds its generated tokens again. One whose recomputation fails ends alone.</summary>
    private void ResumePreempted()
    {
        while (_preempted.Count > 0)
        {
            var e = _preempted[0];
            if (!e.Lease!.TryResume(e.SlotsAtPreempt)) return;
            _preempted.RemoveAt(0);
            Interlocked.Decrement(ref _preemptedCount);
            SequenceKvCache cache;
            try
            {
                cache = e.Recompute!();
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !_stop.IsCancellationRequested)
            {
                Fail(e, ex);
                continue;
            }
            e.Sequence.ReplaceCache(cache);
            e.Feed = [.. e.Sequence.Generated];
            e.Fed = 0;
            FitToLease(e);
            _running.Add(e);
            Interlocked.Increment(ref _runningCount);
        }
    }

    /// <summary>Makes a paged sequence's cache hold exactly its blocks, so that the worker's KV memory is
    /// the pool's: the model then finds room for the next token and does not grow it.</summary>
    private static void FitToLease(Entry e)
    {
        var cache = e.Sequence.Cache;
        if (!e.Lease!.TryGrow(cache.MaxLength())) return; // it holds more than its blocks: its next step grows them
        if (e.Lease.Slots > 0 && cache.Capacity != e.Lease.Slots) cache.Resize(e.Lease.Slots);
    }
}
