using Cluster.Serving.Kv;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Announced puts (CacheManager.ReservePut): a reader of the session waits until the put ends
/// or its reservation expires; other sessions never wait.</summary>
public sealed class PendingPutsTests
{
    [Fact]
    public async Task A_reader_waits_for_the_announced_put_and_no_longer()
    {
        var pending = new PendingPuts();
        pending.Reserve("s");
        var read = pending.WaitAsync("s", CancellationToken.None);
        await Task.Delay(50);
        Assert.False(read.IsCompleted);
        Assert.True(pending.WaitAsync("other", CancellationToken.None).IsCompleted);
        pending.Ended("s");
        await read.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, pending.Count);
    }

    [Fact]
    public async Task Two_announced_puts_both_land_before_a_reader_goes_on()
    {
        var pending = new PendingPuts();
        pending.Reserve("s");
        pending.Reserve("s");
        var read = pending.WaitAsync("s", CancellationToken.None);
        pending.Ended("s");
        await Task.Delay(50);
        Assert.False(read.IsCompleted);
        pending.Ended("s");
        await read.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task A_put_that_never_comes_holds_readers_until_its_reservation_expires()
    {
        var time = new KvTestData.ManualTime();
        var pending = new PendingPuts(time);
        pending.Reserve("s");
        var read = pending.WaitAsync("s", CancellationToken.None);
        await Task.Delay(50);
        Assert.False(read.IsCompleted);
        time.Advance(PendingPuts.Expiry + TimeSpan.FromSeconds(1));
        await read.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, pending.Count);
        // A later put's end does not release a newer reservation in place of the expired one.
        pending.Reserve("s");
        var next = pending.WaitAsync("s", CancellationToken.None);
        await Task.Delay(50);
        Assert.False(next.IsCompleted);
        pending.Ended("s");
        await next.WaitAsync(TimeSpan.FromSeconds(5));
    }
}
