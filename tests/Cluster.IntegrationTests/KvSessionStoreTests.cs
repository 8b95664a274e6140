using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Kv;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>The cache manager's store: its stated rule when full, compression on ingest, versions.</summary>
public sealed class KvSessionStoreTests
{
    private static readonly KvShape Shape = new(2, 2, 4, new RopeTable(4, 10000, RopeLayout.Halves));

    /// <summary>A whole cache of <paramref name="tokens"/> tokens whose values encode (layer, head, position).</summary>
    private static List<WireKvBlock> Blocks(int tokens) => Enumerable.Range(0, Shape.Layers).Select(l =>
    {
        var positions = Enumerable.Range(0, Shape.KvHeads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray();
        var values = Enumerable.Range(0, Shape.KvHeads * tokens * Shape.HeadDim).Select(i => (float)(l * 100000 + i)).ToArray();
        return KvTestData.Fp32(new KvLayerBlock(l, positions, values, values.Select(v => -v).ToArray()));
    }).ToList();

    private static long BytesOf(int tokens) => (long)Shape.Layers * Shape.KvHeads * tokens * Shape.HeadDim * 4 * 2;

    [Fact]
    public void A_put_beyond_the_budget_is_refused_and_nothing_stored_is_touched()
    {
        using var store = new KvSessionStore(BytesOf(100), TimeSpan.FromHours(1));
        store.Put("a", Shape, "dense", 60, Blocks(60), false, 0);
        var before = store.Get("a")!;
        var e = Assert.Throws<KvStoreFullException>(() => store.Put("b", Shape, "dense", 60, Blocks(60), false, 0));
        Assert.Contains("budget", e.Message);
        Assert.Null(store.Get("b"));
        Assert.Same(before, store.Get("a"));
        Assert.Equal(BytesOf(60), store.Bytes);
    }

    [Fact]
    public void Sessions_idle_past_the_ttl_are_dropped_first_to_make_room()
    {
        var time = new ManualTime();
        using var store = new KvSessionStore(BytesOf(100), TimeSpan.FromMinutes(10), time: time);
        store.Put("old", Shape, "dense", 60, Blocks(60), false, 0);
        time.Advance(TimeSpan.FromMinutes(11));
        store.Put("new", Shape, "dense", 60, Blocks(60), false, 0);
        Assert.Null(store.Get("old"));
        Assert.NotNull(store.Get("new"));
        Assert.Equal(BytesOf(60), store.Bytes);
    }

    [Fact]
    public void A_policy_compresses_on_ingest_to_its_budget_keeping_sinks_and_the_recent_window()
    {
        using var store = new KvSessionStore(BytesOf(1000), TimeSpan.FromHours(1));
        var (kv, _) = store.Put("s", Shape, "window(16)", 50, Blocks(50), false, 0);
        Assert.Equal(16, kv.KeptTokens);
        Assert.Equal(50, kv.TokensReceived);
        Assert.All(kv.Layers, l => Assert.All(l.Positions, p => Assert.Equal(Enumerable.Range(34, 16), p)));
        // The kept slots carry their own data (slot 34 of head 0, layer 1), not a neighbour's.
        Assert.Equal(100000 + 34 * Shape.HeadDim, BitConverter.ToSingle(kv.Layers[1].Keys, 0));
        Assert.Equal(BytesOf(16), store.Bytes);
    }

    [Fact]
    public void Versions_go_up_and_a_restart_gets_the_newest_not_ahead_of_its_client()
    {
        using var store = new KvSessionStore(BytesOf(1000), TimeSpan.FromHours(1));
        foreach (var n in new[] { 10, 20, 30, 40, 50 }) store.Put("s", Shape, "dense", n, Blocks(n), true, n);
        Assert.Equal(5, store.Get("s")!.Version);
        Assert.Equal(40, store.Get("s", maxTokens: 49)!.TokensSeen);
        // Version 2 (20 tokens) was superseded; the first (10 tokens, the prompt's) stays to fall back on.
        Assert.Equal(10, store.Get("s", maxTokens: 29)!.TokensSeen);
        Assert.Null(store.Get("s", maxTokens: 9));
        Assert.Equal(BytesOf(10) + BytesOf(30) + BytesOf(40) + BytesOf(50), store.Bytes);
        Assert.True(store.Release("s"));
        Assert.Equal(0, store.Bytes);
    }

    [Fact]
    public void Blocks_that_are_not_one_whole_cache_are_refused()
    {
        using var store = new KvSessionStore(BytesOf(1000), TimeSpan.FromHours(1));
        Assert.Throws<Cluster.Serving.Hosting.InvalidRequestException>(() => store.Put("s", Shape, "dense", 5, Blocks(5).Take(1).ToList(), false, 0));
        Assert.Throws<Cluster.Serving.Hosting.InvalidRequestException>(() => store.Put("s", Shape, "nonsense(1)", 5, Blocks(5), false, 0));
        Assert.Equal(0, store.Bytes);
    }

    private sealed class ManualTime : TimeProvider
    {
        private DateTimeOffset _now = DateTimeOffset.UnixEpoch;
        public void Advance(TimeSpan by) => _now += by;
        public override DateTimeOffset GetUtcNow() => _now;
    }
}
