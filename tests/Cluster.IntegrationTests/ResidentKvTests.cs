using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Serving.Kv;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>The decode worker's kept caches (KV-aware routing): exact eviction order, budget, idle
/// expiry, and a cache handed out only for the token count it holds.</summary>
public sealed class ResidentKvTests : IDisposable
{
    private readonly CpuBackend _backend = new(threads: 1, useOpenBlas: false);
    private readonly List<SequenceKvCache> _made = [];

    /// <summary>A cache of 2 layers x 1 head x 4 dims with <paramref name="capacity"/> slots
    /// (2 * 2 * 1 * capacity * 4 * 4 bytes = 64 * capacity) that has seen <paramref name="tokens"/> tokens.</summary>
    private SequenceKvCache Cache(int capacity, int tokens = 0)
    {
        var c = new SequenceKvCache(_backend, layers: 2, kvHeads: 1, headDim: 4, initialCapacity: capacity, Cluster.Engine.Compression.DensePolicy.Default);
        c.StartAt(tokens);
        _made.Add(c);
        return c;
    }

    [Fact]
    public void Size_counts_k_and_v_of_every_layer_and_head_at_capacity()
    {
        Assert.Equal(64 * 10, ResidentKv.SizeOf(Cache(10)));
    }

    [Fact]
    public void The_least_recently_kept_go_first_and_the_budget_is_never_passed()
    {
        using var store = new ResidentKv(budgetBytes: 64 * 25, TimeSpan.FromHours(1));
        SequenceKvCache a = Cache(10, 5), b = Cache(10, 6), c = Cache(10, 7);
        Assert.True(store.Keep("a", a));
        Assert.True(store.Keep("b", b));
        Assert.Equal(64 * 20, store.Bytes);
        Assert.True(store.Keep("c", c)); // 30 slots > 25: a (kept first) goes
        Assert.Equal(64 * 20, store.Bytes);
        Assert.Null(store.TryTake("a", 5));
        Assert.Same(b, store.TryTake("b", 6));
        Assert.Same(c, store.TryTake("c", 7));
        Assert.Equal(0, store.Bytes);
        Assert.Equal(0, store.Count);
    }

    [Fact]
    public void Keeping_a_session_again_replaces_its_cache_and_a_cache_larger_than_the_budget_is_not_kept()
    {
        using var store = new ResidentKv(budgetBytes: 64 * 25, TimeSpan.FromHours(1));
        Assert.True(store.Keep("s", Cache(10, 3)));
        var newer = Cache(12, 9);
        Assert.True(store.Keep("s", newer));
        Assert.Equal(1, store.Count);
        Assert.Equal(64 * 12, store.Bytes);
        Assert.False(store.Keep("big", Cache(26, 1)));
        Assert.Equal(64 * 12, store.Bytes);
        Assert.Same(newer, store.TryTake("s", 9));
    }

    [Fact]
    public void A_cache_is_handed_out_once_and_only_for_the_tokens_it_holds()
    {
        using var store = new ResidentKv(budgetBytes: 1 << 20, TimeSpan.FromHours(1));
        var cache = Cache(10, 8);
        store.Keep("s", cache);
        Assert.Null(store.TryTake("s", 9)); // another count: stale for this request, dropped
        Assert.Equal(0, store.Count);
        store.Keep("t", Cache(10, 4));
        Assert.NotNull(store.TryTake("t", 4));
        Assert.Null(store.TryTake("t", 4)); // taken: the next turn keeps it again when it ends
    }

    /// <summary>A cache that holds positions 0..tokens-1 in every head (nothing evicted), or, with
    /// <paramref name="evicted"/>, lacks position 1 (a policy dropped it).</summary>
    private SequenceKvCache Filled(int capacity, int tokens, bool evicted = false)
    {
        var c = Cache(capacity);
        int[] kept = [.. Enumerable.Range(0, tokens).Where(t => !evicted || t != 1)];
        for (int l = 0; l < 2; l++)
            KvCacheSnapshot.Restore(_backend, c, new KvLayerBlock(l, [kept], new float[kept.Length * 4], new float[kept.Length * 4]));
        KvCacheSnapshot.SetTokensSeen(c, tokens);
        return c;
    }

    [Fact]
    public void A_resumed_stream_takes_a_cache_within_its_range_and_a_dense_one_is_cut_back_to_it()
    {
        using var store = new ResidentKv(budgetBytes: 1 << 20, TimeSpan.FromHours(1));
        var within = Filled(16, 9);
        store.Keep("s", within);
        Assert.Same(within, store.TryTake("s", 5, 10));
        Assert.Equal(9, within.TokensSeen);

        // The worker ran tokens its client never saw: a dense cache is cut back to what the client has.
        var ahead = Filled(16, 12);
        store.Keep("s", ahead);
        Assert.Same(ahead, store.TryTake("s", 5, 10));
        Assert.Equal(10, ahead.TokensSeen);
        Assert.All(ahead.Layers, l => Assert.Equal(10, l.Lengths[0]));

        // A compressed cache cannot be rolled back, and one lacking the prompt is not this request's.
        store.Keep("s", Filled(16, 12, evicted: true));
        Assert.Null(store.TryTake("s", 5, 10));
        store.Keep("s", Filled(16, 4));
        Assert.Null(store.TryTake("s", 5, 10));
        Assert.Equal(0, store.Count);
    }

    [Fact]
    public void Caches_idle_past_the_limit_are_dropped()
    {
        var clock = new KvTestData.ManualTime();
        using var store = new ResidentKv(budgetBytes: 1 << 20, TimeSpan.FromMinutes(10), clock);
        store.Keep("old", Cache(10, 1));
        clock.Advance(TimeSpan.FromMinutes(6));
        store.Keep("young", Cache(10, 2));
        clock.Advance(TimeSpan.FromMinutes(5)); // old: 11 minutes, young: 5
        Assert.Null(store.TryTake("old", 1));
        Assert.Equal(1, store.Count);
        Assert.NotNull(store.TryTake("young", 2));
    }

    [Fact]
    public void Reclaim_drops_the_least_recently_kept_until_enough_is_freed_and_gives_their_room_back()
    {
        var admission = new Cluster.Engine.Scheduling.KvAdmission(numBlocks: 40, blockSize: 1, blockBytes: 64, maxQueue: 4); // a slot of this cache shape: 64 bytes
        using var store = new ResidentKv(budgetBytes: 1 << 20, TimeSpan.FromHours(1));
        foreach (var (name, tokens) in new[] { ("a", 1), ("b", 2), ("c", 3) })
        {
            var cache = Cache(10, tokens);
            Assert.True(store.Keep(name, cache, admission.TryAcquire(cache.Capacity)));
        }
        Assert.Equal(64 * 30, admission.UsedBytes);
        Assert.Equal(64 * 20, store.Reclaim(64 * 11)); // a (10 slots) is not enough: b goes too
        Assert.Equal(64 * 10, admission.UsedBytes);
        Assert.Null(store.TryTake("a", 1));
        Assert.Null(store.TryTake("b", 2));
        Assert.NotNull(store.TryTake("c", 3));
        Assert.Equal(0, admission.UsedBytes); // taking a cache gives its room back: the request has its own
    }

    /// <summary>Kept caches live inside the decode worker's KV budget: a request that does not fit takes
    /// their room (oldest first) instead of waiting, and no cache is kept while a request waits.</summary>
    [Fact]
    public async Task A_request_takes_the_room_of_kept_caches_and_none_is_kept_while_one_waits()
    {
        var admission = new Cluster.Engine.Scheduling.KvAdmission(numBlocks: 40, blockSize: 1, blockBytes: 64, maxQueue: 4); // a slot of this cache shape: 64 bytes
        using var store = new ResidentKv(budgetBytes: 1 << 20, TimeSpan.FromHours(1));
        admission.Reclaim = bytes => store.Reclaim(bytes);
        var live = await admission.AcquireAsync(10);
        foreach (var (name, tokens) in new[] { ("a", 1), ("b", 2), ("c", 3) })
        {
            var cache = Cache(10, tokens);
            Assert.True(store.Keep(name, cache, admission.TryAcquire(cache.Capacity)));
        }
        Assert.Null(admission.TryAcquire(1)); // full: 10 live + 30 kept

        using var second = await admission.AcquireAsync(15); // takes a's and b's room at once
        Assert.Equal(1, store.Count);
        Assert.Equal(64 * 35, admission.UsedBytes); // c keeps its room while it fits

        var waiting = admission.AcquireAsync(30).AsTask(); // 10 + 15 live: c goes, and it still waits
        Assert.False(waiting.IsCompleted);
        Assert.Equal(0, store.Count);
        var cache2 = Cache(5, 9);
        Assert.Null(admission.TryAcquire(cache2.Capacity)); // nothing is kept while one waits
        live.Dispose();
        second.Dispose();
        (await waiting).Dispose();
        Assert.Equal(0, admission.UsedBytes);
    }

    public void Dispose()
    {
        foreach (var c in _made) c.Dispose();
        _backend.Dispose();
    }
}
