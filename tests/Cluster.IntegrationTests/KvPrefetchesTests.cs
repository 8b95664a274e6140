using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Serving.Kv;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>The decode worker's prefetches (Decode.PrefetchKv): a Decode call waits for the one under way,
/// takes a parked one out of the resident store, never waits on a put that will not be announced, and
/// nothing outlives its expiry or holds room it was not given.</summary>
public sealed class KvPrefetchesTests : IDisposable
{
    private readonly CpuBackend _backend = new(threads: 1, useOpenBlas: false);
    private readonly List<SequenceKvCache> _made = [];
    private readonly ResidentKv _resident = new(budgetBytes: 1 << 20, TimeSpan.FromHours(1));
    private readonly List<int> _roomAsked = [];
    private int _roomHeld;

    private sealed class Room(KvPrefetchesTests owner) : IDisposable
    {
        private bool _disposed;
        public void Dispose() { if (!_disposed) { _disposed = true; owner._roomHeld--; } }
    }

    private IDisposable? GiveRoom(int tokens)
    {
        _roomAsked.Add(tokens);
        _roomHeld++;
        return new Room(this);
    }

    private PrefetchedKv Fetched(string session, int tokens)
    {
        var cache = new SequenceKvCache(_backend, layers: 2, kvHeads: 1, headDim: 4, initialCapacity: tokens + 3, Cluster.Engine.Compression.DensePolicy.Default);
        cache.StartAt(tokens);
        _made.Add(cache);
        var handle = new KvHandle { SessionId = session, TokenCount = tokens, Version = 7 };
        return new PrefetchedKv(handle, KvDigest.Of([new KvLayerBlock(0, [[0]], [1f, 2f, 3f, 4f], [5f, 6f, 7f, 8f])], headDim: 4), cache);
    }

    [Fact]
    public async Task A_call_that_comes_while_the_fetch_runs_waits_for_it_and_gets_it_directly()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        var fetch = new TaskCompletionSource<PrefetchedKv?>();
        Assert.True(prefetches.Start("s", (_, _) => fetch.Task));
        Assert.False(prefetches.Start("s", (_, _) => fetch.Task)); // one per session
        var claim = prefetches.ClaimAsync("s", CancellationToken.None);
        await Task.Delay(50);
        Assert.False(claim.IsCompleted); // it waits for the transfer under way
        var made = Fetched("s", 12);
        fetch.SetResult(made);
        var got = await claim.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Same(made.Cache, got!.Cache);
        Assert.Equal(7, got.Handle.Version);
        Assert.Empty(_roomAsked); // handed over, never parked
        Assert.Equal(0, _resident.Count);
        Assert.Equal(0, prefetches.Count);
    }

    [Fact]
    public async Task A_finished_prefetch_is_parked_in_the_resident_store_with_its_room_and_taken_out_by_its_call()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        var made = Fetched("s", 12);
        Assert.True(prefetches.Start("s", (_, _) => Task.FromResult<PrefetchedKv?>(made)));
        for (int i = 0; i < 100 && !_resident.Holds("s"); i++) await Task.Delay(10);
        Assert.True(_resident.Holds("s"));
        Assert.Equal([made.Cache.Capacity], _roomAsked);
        Assert.Equal(1, _roomHeld);
        var got = await prefetches.ClaimAsync("s", CancellationToken.None);
        Assert.Same(made.Cache, got!.Cache);
        Assert.Same(made.Loaded, got.Loaded); // the base of the call's incremental checkpoints
        Assert.False(_resident.Holds("s"));
        Assert.Equal(0, _roomHeld); // the call holds its own lease
        Assert.Null(await prefetches.ClaimAsync("s", CancellationToken.None)); // taken once
    }

    [Fact]
    public async Task A_parked_prefetch_whose_cache_was_reclaimed_gives_nothing()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        Assert.True(prefetches.Start("s", (_, _) => Task.FromResult<PrefetchedKv?>(Fetched("s", 12))));
        for (int i = 0; i < 100 && !_resident.Holds("s"); i++) await Task.Delay(10);
        _resident.Reclaim(1); // a request needed the room
        Assert.Equal(0, _roomHeld);
        Assert.Null(await prefetches.ClaimAsync("s", CancellationToken.None));
    }

    [Fact]
    public async Task A_fetch_waiting_for_the_put_to_be_announced_asks_again_as_soon_as_its_call_comes()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        int asked = 0;
        var made = Fetched("s", 12);
        Assert.True(prefetches.Start("s", async (state, ct) =>
        {
            while (true)
            {
                // NOT_FOUND until the call has come (the put was announced just before prefill answered).
                if (++asked > 1 && state.Claimed) return made;
                await state.BeforeAskingAgainAsync(TimeSpan.FromHours(1), ct);
            }
        }));
        await Task.Delay(20);
        var got = await prefetches.ClaimAsync("s", CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Same(made.Cache, got!.Cache);
        Assert.Equal(2, asked);
    }

    [Fact]
    public async Task The_fetch_learns_that_its_call_has_come()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        var asking = new TaskCompletionSource();
        var answer = new TaskCompletionSource();
        bool claimedSeen = false;
        Assert.True(prefetches.Start("s", async (state, ct) =>
        {
            asking.SetResult();
            await answer.Task; // a get under way (NOT_FOUND on its way back)
            claimedSeen = state.Claimed;
            return null;
        }));
        await asking.Task;
        var claim = prefetches.ClaimAsync("s", CancellationToken.None);
        answer.SetResult();
        Assert.Null(await claim.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(claimedSeen);
    }

    [Fact]
    public async Task A_parked_prefetch_nobody_claims_is_dropped_after_its_expiry()
    {
        var clock = new KvTestData.ManualTime();
        using var prefetches = new KvPrefetches(_resident, GiveRoom, clock);
        Assert.True(prefetches.Start("old", (_, _) => Task.FromResult<PrefetchedKv?>(Fetched("old", 5))));
        for (int i = 0; i < 100 && !_resident.Holds("old"); i++) await Task.Delay(10);
        clock.Advance(KvPrefetches.Expiry - TimeSpan.FromSeconds(1));
        Assert.True(prefetches.Start("new", (_, _) => Task.FromResult<PrefetchedKv?>(null)));
        Assert.True(_resident.Holds("old")); // not yet
        clock.Advance(TimeSpan.FromSeconds(2));
        Assert.True(prefetches.Start("newer", (_, _) => Task.FromResult<PrefetchedKv?>(null)));
        Assert.False(_resident.Holds("old"));
        Assert.Equal(0, _roomHeld);
        Assert.Null(await prefetches.ClaimAsync("old", CancellationToken.None));
    }

    [Fact]
    public async Task Without_room_in_the_budget_a_finished_prefetch_is_not_kept()
    {
        using var prefetches = new KvPrefetches(_resident, _ => null);
        var made = Fetched("s", 12);
        Assert.True(prefetches.Start("s", (_, _) => Task.FromResult<PrefetchedKv?>(made)));
        for (int i = 0; i < 100 && prefetches.Count > 0; i++) await Task.Delay(10);
        Assert.Equal(0, prefetches.Count);
        Assert.False(_resident.Holds("s"));
        Assert.True(made.Cache.IsDisposed);
    }

    [Fact]
    public async Task A_fetch_that_fails_leaves_the_call_to_fetch_itself()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        var fetch = new TaskCompletionSource<PrefetchedKv?>();
        Assert.True(prefetches.Start("s", (_, _) => fetch.Task));
        var claim = prefetches.ClaimAsync("s", CancellationToken.None);
        fetch.SetException(new Grpc.Core.RpcException(new Grpc.Core.Status(Grpc.Core.StatusCode.Unavailable, "cache manager down")));
        Assert.Null(await claim.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task What_arrives_after_its_call_gave_up_is_disposed()
    {
        using var prefetches = new KvPrefetches(_resident, GiveRoom);
        var fetch = new TaskCompletionSource<PrefetchedKv?>();
        Assert.True(prefetches.Start("s", (_, _) => fetch.Task));
        using var cts = new CancellationTokenSource();
        var claim = prefetches.ClaimAsync("s", cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => claim);
        var made = Fetched("s", 12);
        fetch.SetResult(made);
        for (int i = 0; i < 100 && !made.Cache.IsDisposed; i++) await Task.Delay(10);
        Assert.True(made.Cache.IsDisposed);
        Assert.False(_resident.Holds("s"));
    }

    public void Dispose()
    {
        _resident.Dispose();
        foreach (var c in _made) c.Dispose();
        _backend.Dispose();
    }
}
