using Cluster.Engine.Scheduling;
using Xunit;

namespace Cluster.Engine.Tests.Scheduling;

public class KvAdmissionTests
{
    /// <summary>One-slot blocks of one byte: the admission tests read in tokens and bytes alike.</summary>
    private static KvAdmission Gate(int slots, int maxQueue) => new(numBlocks: slots, blockSize: 1, blockBytes: 1, maxQueue);

    [Fact]
    public async Task Admits_while_the_budget_holds_then_queues_in_arrival_order()
    {
        var gate = Gate(100, maxQueue: 10);
        var a = await gate.AcquireAsync(50);
        var b = await gate.AcquireAsync(50);
        Assert.Equal(100, gate.UsedBytes);

        var c = gate.AcquireAsync(60).AsTask();
        var d = gate.AcquireAsync(10).AsTask(); // would fit after one release, but waits behind c (no overtaking)
        var e = gate.AcquireAsync(40).AsTask();
        await Task.Delay(50);
        Assert.Equal(3, gate.Waiting);

        a.Dispose(); // 50 free: c (60) does not fit, so d and e wait too
        await Task.Delay(50);
        Assert.False(c.IsCompleted || d.IsCompleted || e.IsCompleted);

        b.Dispose(); // 100 free: c and d are admitted in order; e (40) would make 110 and waits
        var (rc, rd) = (await c, await d);
        await Task.Delay(50);
        Assert.False(e.IsCompleted);
        Assert.Equal(70, gate.UsedBytes);
        Assert.Equal(1, gate.Waiting);

        rc.Dispose();
        var re = await e;
        Assert.Equal(50, gate.UsedBytes);
        Assert.Equal(100, gate.PeakBytes);
        rd.Dispose();
        rd.Dispose(); // a second dispose returns nothing twice
        re.Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    [Fact]
    public async Task A_full_queue_refuses_with_a_message_and_leaves_the_rest_alone()
    {
        var gate = Gate(10, maxQueue: 2);
        var held = await gate.AcquireAsync(10);
        var w1 = gate.AcquireAsync(5).AsTask();
        var w2 = gate.AcquireAsync(5).AsTask();
        var refused = await Assert.ThrowsAsync<KvAdmissionRefusedException>(() => gate.AcquireAsync(1).AsTask());
        Assert.Contains("2 requests already wait", refused.Message);
        Assert.Equal(1, gate.Refused);
        held.Dispose();
        (await w1).Dispose();
        (await w2).Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    [Fact]
    public async Task More_than_the_whole_budget_is_refused_at_once()
    {
        var gate = Gate(1 << 10, maxQueue: 4);
        var e = await Assert.ThrowsAsync<KvAdmissionRefusedException>(() => gate.AcquireAsync(2 << 10).AsTask());
        Assert.Contains("exceeds the worker's whole KV budget", e.Message);
        Assert.Equal(0, gate.Waiting);
    }

    [Fact]
    public async Task A_cancelled_waiter_leaves_the_queue_and_unblocks_those_behind_it()
    {
        var gate = Gate(10, maxQueue: 4);
        var held = await gate.AcquireAsync(6);
        using var cts = new CancellationTokenSource();
        var big = gate.AcquireAsync(10, cts.Token).AsTask();  // head of the queue, cannot fit while 6 are held
        var small = gate.AcquireAsync(4).AsTask();             // would fit, but waits behind the head
        await Task.Delay(50);
        Assert.False(small.IsCompleted);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => big);
        (await small).Dispose();
        Assert.Equal(0, gate.Waiting);
        held.Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    [Fact]
    public async Task Many_concurrent_sequences_never_exceed_the_budget_and_all_finish()
    {
        var gate = Gate(1000, maxQueue: 1000);
        var rng = new Random(7);
        var sizes = Enumerable.Range(0, 200).Select(_ => rng.Next(1, 400)).ToArray();
        long inUse = 0, worst = 0;
        await Task.WhenAll(sizes.Select(async size =>
        {
            using var r = await gate.AcquireAsync(size);
            var now = Interlocked.Add(ref inUse, size);
            InterlockedMax(ref worst, now);
            await Task.Yield();
            Interlocked.Add(ref inUse, -size);
        }));
        Assert.True(worst <= 1000, $"{worst} bytes held at once");
        Assert.True(gate.PeakBytes <= 1000);
        Assert.Equal(0, gate.UsedBytes);
    }

    /// <summary>vLLM-style exact ids: a lease takes blocks for what it holds, grows block by block, and
    /// "no room" is false; a preempted lease gives its blocks back (tail first) and, until it resumes, a
    /// new sequence that would fit waits behind it.</summary>
    [Fact]
    public async Task Leases_grow_lazily_and_a_preempted_one_resumes_before_new_sequences()
    {
        var gate = new KvAdmission(numBlocks: 4, blockSize: 4, blockBytes: 100, maxQueue: 4);
        var a = await gate.AcquireAsync(5);
        var b = await gate.AcquireAsync(3);
        Assert.Equal([0, 1], a.Blocks);
        Assert.Equal([2], b.Blocks);
        Assert.True(a.TryGrow(8)); // within its blocks: nothing taken
        Assert.Equal([0, 1], a.Blocks);
        Assert.True(b.TryGrow(5));
        Assert.Equal([2, 3], b.Blocks);
        Assert.False(a.TryGrow(9)); // the pool is full: an answer, and nothing taken
        Assert.Equal([0, 1], a.Blocks);
        Assert.Equal(400, gate.UsedBytes);

        b.Preempt();
        Assert.Equal(1, gate.Preemptions);
        Assert.Equal(1, gate.Suspended);
        Assert.Equal(0, b.Slots);
        Assert.True(a.TryGrow(9)); // b's last block came back first
        Assert.Equal([0, 1, 3], a.Blocks);

        var c = gate.AcquireAsync(1).AsTask(); // one block is free, but b was admitted first
        await Task.Delay(50);
        Assert.False(c.IsCompleted);
        Assert.Equal(1, gate.Waiting);
        Assert.Null(gate.TryAcquire(1)); // nor is a cache kept
        Assert.False(b.TryResume(5)); // two blocks needed, one free

        a.Dispose(); // free queue: 2, then a's blocks from its tail: 3 1 0
        await Task.Delay(50);
        Assert.False(c.IsCompleted); // still behind b
        Assert.True(b.TryResume(5));
        Assert.Equal([2, 3], b.Blocks);
        var rc = await c;
        Assert.Equal([1], rc.Blocks);
        Assert.Equal(0, gate.Suspended);
        Assert.Equal(400, gate.PeakBytes);
        b.Dispose();
        rc.Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    [Fact]
    public async Task A_lease_disposed_while_preempted_lets_new_sequences_in()
    {
        var gate = new KvAdmission(numBlocks: 2, blockSize: 4, blockBytes: 1, maxQueue: 4);
        var a = await gate.AcquireAsync(8);
        a.Preempt();
        var b = gate.AcquireAsync(4).AsTask();
        await Task.Delay(50);
        Assert.False(b.IsCompleted);
        a.Dispose(); // its stream was cancelled while it waited to resume
        Assert.Equal([1], (await b).Blocks);
        Assert.Equal(0, gate.Suspended);
    }

    [Fact]
    public async Task A_lease_that_cannot_grow_reclaims_kept_caches_first()
    {
        var gate = new KvAdmission(numBlocks: 3, blockSize: 2, blockBytes: 10, maxQueue: 4);
        var live = await gate.AcquireAsync(2);
        var kept = gate.TryAcquire(4)!;
        long asked = 0;
        gate.Reclaim = bytes => { asked = bytes; kept.Dispose(); };
        Assert.True(live.TryGrow(3));
        Assert.Equal(10, asked); // one block short
        Assert.Equal(2, live.Blocks.Count);
        live.Dispose();
    }

    [Fact]
    public async Task A_preempted_lease_reclaims_kept_caches_to_resume()
    {
        var gate = new KvAdmission(numBlocks: 3, blockSize: 2, blockBytes: 10, maxQueue: 4);
        var seq = await gate.AcquireAsync(4); // 0 1
        var kept = gate.TryAcquire(2)!;        // 2
        seq.Preempt();
        gate.Reclaim = _ => kept.Dispose();
        Assert.True(seq.TryResume(6)); // three blocks: the kept cache's too
        Assert.Equal(3, seq.Blocks.Count);
        seq.Dispose();
    }

    /// <summary>Sequences admitted at once are bounded (a kept cache is not a sequence), and a new one
    /// must leave a free block for each running one: admitted into a pool they are about to fill, it would
    /// only force a preemption at the next block boundary.</summary>
    [Fact]
    public async Task Admission_stops_at_max_sequences_and_leaves_headroom_for_the_running_ones()
    {
        var gate = new KvAdmission(numBlocks: 6, blockSize: 4, blockBytes: 1, maxQueue: 4, maxSequences: 2, headroom: 1);
        var a = await gate.AcquireAsync(8); // 0 1
        var b = gate.AcquireAsync(8).AsTask(); // 2 blocks + 1 for a: fits in 4
        Assert.Equal([2, 3], (await b).Blocks);
        var c = gate.AcquireAsync(1).AsTask(); // two sequences already
        await Task.Delay(50);
        Assert.False(c.IsCompleted);
        a.Dispose(); // free queue 4 5 1 0; c needs 1 + 1 for b
        Assert.Equal([4], (await c).Blocks);
        var d = gate.AcquireAsync(4).AsTask(); // a third sequence waits for b or c
        var kept = gate.TryAcquire(0); // nothing waits for blocks, but d waits: nothing is kept
        Assert.Null(kept);
        (await b).Dispose();
        var rd = await d; // 1 block + 1 for c: free are 5 1 0 3 2
        Assert.Equal([5], rd.Blocks);
        rd.Dispose();
        (await c).Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    /// <summary>Growing ahead takes only blocks nobody needs: the free ones beyond each running sequence's
    /// headroom block, and none while a preempted (or new) sequence waits; a refusal changes nothing.</summary>
    [Fact]
    public async Task Growing_from_spare_blocks_leaves_the_running_sequences_headroom()
    {
        var gate = new KvAdmission(numBlocks: 8, blockSize: 4, blockBytes: 1, maxQueue: 4, maxSequences: 2, headroom: 1);
        var a = await gate.AcquireAsync(4); // block 0
        var b = await gate.AcquireAsync(4); // block 1; free: 2 3 4 5 6 7
        Assert.True(a.TryGrowFromSpare(16)); // 3 more, leaving 3 free: 1 headroom each for a and b, 1 spare
        Assert.Equal([0, 2, 3, 4], a.Blocks);
        Assert.False(a.TryGrowFromSpare(24)); // 2 more would leave 1 free: below the two headroom blocks
        Assert.Equal([0, 2, 3, 4], a.Blocks);
        Assert.True(a.TryGrowFromSpare(20)); // 1 more leaves the 2 headroom blocks
        Assert.Equal([0, 2, 3, 4, 5], a.Blocks);
        Assert.True(b.TryGrow(12)); // the exact growth still takes the headroom when it must
        Assert.Equal([1, 6, 7], b.Blocks);
        b.Preempt(); // free: 1 6 7; a preempted sequence waits to resume: nothing is spare
        Assert.False(a.TryGrowFromSpare(24));
        Assert.Equal(5, a.Blocks.Count);
        b.Dispose(); // nobody waits now, and b's three blocks are free: one more for a leaves two
        Assert.True(a.TryGrowFromSpare(24));
        Assert.Equal(6, a.Blocks.Count);
        a.Dispose();
        Assert.Equal(0, gate.UsedBytes);
    }

    private static void InterlockedMax(ref long target, long value)
    {
        long current;
        while ((current = Interlocked.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, current) != current) { }
    }
}
