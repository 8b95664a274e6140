using Cluster.Engine.Scheduling;
using Xunit;

namespace Cluster.Engine.Tests.Scheduling;

public class KvAdmissionTests
{
    [Fact]
    public async Task Admits_while_the_budget_holds_then_queues_in_arrival_order()
    {
        var gate = new KvAdmission(budgetBytes: 100, maxQueue: 10);
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
        var gate = new KvAdmission(budgetBytes: 10, maxQueue: 2);
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
        var gate = new KvAdmission(budgetBytes: 1 << 20, maxQueue: 4);
        var e = await Assert.ThrowsAsync<KvAdmissionRefusedException>(() => gate.AcquireAsync(2 << 20).AsTask());
        Assert.Contains("exceeds the worker's whole KV budget", e.Message);
        Assert.Equal(0, gate.Waiting);
    }

    [Fact]
    public async Task A_cancelled_waiter_leaves_the_queue_and_unblocks_those_behind_it()
    {
        var gate = new KvAdmission(budgetBytes: 10, maxQueue: 4);
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
        var gate = new KvAdmission(budgetBytes: 1000, maxQueue: 1000);
        var rng = new Random(7);
        var sizes = Enumerable.Range(0, 200).Select(_ => (long)rng.Next(1, 400)).ToArray();
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

    private static void InterlockedMax(ref long target, long value)
    {
        long current;
        while ((current = Interlocked.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, current) != current) { }
    }
}
