using Cluster.Serving.Kv;
using Xunit;
using static Cluster.IntegrationTests.KvTestData;

namespace Cluster.IntegrationTests;

/// <summary>The store's rule when a put does not fit (issue 21): TTL-expired first, then least recently used among sessions idle at least the minimum.</summary>
public sealed class KvSessionStoreEvictionTests
{
    private static readonly TimeSpan MinIdle = TimeSpan.FromSeconds(5);

    private static KvSessionStore Store(ManualTime time, int budgetTokens, double ttlSeconds = 3600) =>
        new(BytesOf(budgetTokens), TimeSpan.FromSeconds(ttlSeconds), time: time, minIdle: MinIdle);

    private static void Put(KvSessionStore store, string id, int tokens) => store.Put(id, Shape, "dense", tokens, Blocks(tokens), false, 0);

    [Fact]
    public void Sessions_are_evicted_least_recently_used_first_and_a_get_is_a_use()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100);
        Put(store, "a", 30);                     // t=0
        time.Advance(1); Put(store, "b", 30);    // t=1
        time.Advance(1); Put(store, "c", 30);    // t=2
        time.Advance(10); Assert.NotNull(store.Get("a"));   // t=12: a is now the most recently used
        time.Advance(10); Put(store, "d", 30);   // t=22: 120 > 100, one must go: b (used at 1), not a (put first, read at 12)
        Assert.Equal(1, store.Evictions(KvEvictionReason.Lru));
        time.Advance(10); Put(store, "e", 30);   // t=32: c (2) before a (12) and d (22)
        Assert.Equal(2, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(0, store.Evictions(KvEvictionReason.Ttl));
        Assert.Null(store.Get("b"));
        Assert.Null(store.Get("c"));
        Assert.All(new[] { "a", "d", "e" }, id => Assert.NotNull(store.Get(id)));
        Assert.Equal(3, store.Sessions);
        Assert.Equal(BytesOf(90), store.Bytes);
    }

    [Fact]
    public void A_put_evicts_as_many_as_it_needs_oldest_first_and_no_more()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100);
        foreach (var id in new[] { "a", "b", "c", "d" }) { Put(store, id, 25); time.Advance(1); }
        time.Advance(10);
        Put(store, "big", 45);                   // 145 > 100: a and b (50) go, c and d stay
        Assert.Null(store.Get("a"));
        Assert.Null(store.Get("b"));
        Assert.NotNull(store.Get("c"));
        Assert.NotNull(store.Get("d"));
        Assert.Equal(2, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(BytesOf(95), store.Bytes);
    }

    [Fact]
    public void The_session_being_put_is_never_evicted_even_when_it_is_the_least_recently_used()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100);
        Put(store, "s", 40);                     // t=0: the least recently used
        time.Advance(1); Put(store, "o", 30);    // t=1
        time.Advance(10);
        Put(store, "s", 40);                     // 110 > 100: "o" goes, not "s" (its first version stays)
        Assert.Null(store.Get("o"));
        Assert.Equal(40, store.Get("s", version: 1)!.TokensSeen);
        Assert.Equal(2, store.Get("s")!.Version);
        Assert.Equal(BytesOf(80), store.Bytes);

        // Alone and over budget: nothing else to evict, and it does not evict itself.
        time.Advance(10);
        var e = Assert.Throws<KvStoreFullException>(() => Put(store, "s", 30));
        Assert.Contains("budget", e.Message);
        Assert.Equal(2, store.Get("s")!.Version);
        Assert.Equal(BytesOf(80), store.Bytes);
    }

    [Fact]
    public void Sessions_used_within_the_minimum_idle_time_are_not_evicted_and_the_put_is_refused_saying_so()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100);
        Put(store, "live", 60);
        time.Advance(4);                          // under the 5 s minimum: a stream between checkpoints
        var e = Assert.Throws<KvStoreFullException>(() => Put(store, "new", 60));
        Assert.Contains("budget of " + BytesOf(100), e.Message);
        Assert.Contains("idle at least 5 s", e.Message);
        Assert.Contains("1 sessions used more recently", e.Message);
        Assert.Equal(0, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(BytesOf(60), store.Bytes);

        time.Advance(2);                          // now 6 s idle (the refused put was no use of it)
        Put(store, "new", 60);
        Assert.Equal(1, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(1, store.Sessions);
    }

    [Fact]
    public void A_refused_put_evicts_nothing_even_when_some_sessions_could_have_gone()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100);
        Put(store, "idle", 30);
        time.Advance(10);
        Put(store, "live", 50);
        time.Advance(1);
        // 140 > 100; evicting "idle" (30) would leave 110: not enough, so "idle" stays.
        Assert.Throws<KvStoreFullException>(() => Put(store, "new", 60));
        Assert.Equal(0, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(BytesOf(80), store.Bytes);
        Assert.Equal(2, store.Sessions);
    }

    [Fact]
    public void Sessions_past_the_ttl_go_first_and_are_counted_apart()
    {
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 100, ttlSeconds: 60);
        Put(store, "expired", 40);               // t=0
        time.Advance(50); Put(store, "idle", 40); // t=50
        time.Advance(50);                          // t=100: "expired" idle 100 s > 60, "idle" 50 s
        Put(store, "new", 90);                     // needs both gone
        Assert.Equal(1, store.Evictions(KvEvictionReason.Ttl));
        Assert.Equal(1, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(BytesOf(90), store.Bytes);
    }

    [Fact]
    public void Sessions_idle_past_the_ttl_are_swept_by_the_next_use_even_with_room_to_spare()
    {
        // The soak found the store growing to its whole budget under steady load: the TTL only ordered
        // evictions for room. Now any get or put (once per sweep interval) drops what is idle past it.
        var time = new ManualTime();
        using var store = Store(time, budgetTokens: 1000, ttlSeconds: 60);
        Put(store, "old", 40);                        // t=0
        time.Advance(30); Put(store, "mid", 40);      // t=30: a sweep runs, nothing is past the TTL
        time.Advance(31);                             // t=61: "old" idle 61 s > 60, "mid" 31 s
        Assert.NotNull(store.Get("mid"));
        Assert.Equal(1, store.Sessions);
        Assert.Equal(BytesOf(40), store.Bytes);
        Assert.Equal(1, store.Evictions(KvEvictionReason.Ttl));
        Assert.Equal(0, store.Evictions(KvEvictionReason.Lru));
        Assert.Null(store.Get("old"));
    }
}
