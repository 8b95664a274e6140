using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Issue 17, incremental checkpoints at the cache manager's store: a base plus deltas gives
/// exactly what a whole put of the same cache gives, a delta only lands on the version it was computed
/// from, and checkpoints are kept as their changes to the first version, so memory grows by what
/// changed, never past what whole versions take.</summary>
public sealed class KvDeltaStoreTests
{
    private static readonly KvShape Shape = new(2, 3, 4, new RopeTable(4, 10000, RopeLayout.Halves));

    /// <summary>
    /// A cache as a sequence of captures: every head holds its own set of positions, and a row's
    /// value is a formula of (layer, head, position, stamp) where the stamp is the step that last
    /// wrote it, so a test can change a row in place (a re-rotated sink) without changing its position.
    /// </summary>
    private sealed class FakeCache
    {
        private readonly SortedDictionary<int, int>[,] _rows = new SortedDictionary<int, int>[Shape.Layers, Shape.KvHeads];
        public int TokensSeen { get; private set; }

        public FakeCache()
        {
            for (int l = 0; l < Shape.Layers; l++)
                for (int h = 0; h < Shape.KvHeads; h++) _rows[l, h] = [];
        }

        public void Append(int count, int stamp)
        {
            for (int i = 0; i < count; i++, TokensSeen++)
                foreach (var r in _rows) r[TokensSeen] = stamp;
        }

        /// <summary>Drops positions per head (heads may drop different ones, as qfilters does).</summary>
        public void Evict(Func<int, int, IEnumerable<int>> positions)
        {
            for (int l = 0; l < Shape.Layers; l++)
                for (int h = 0; h < Shape.KvHeads; h++)
                    foreach (var p in positions(l, h).ToList()) _rows[l, h].Remove(p);
        }

        /// <summary>Rewrites the rows at these positions in place (a re-rotation).</summary>
        public void Touch(IEnumerable<int> positions, int stamp)
        {
            foreach (var r in _rows)
                foreach (var p in positions)
                    if (r.ContainsKey(p)) r[p] = stamp;
        }

        public List<KvLayerBlock> Capture() => Enumerable.Range(0, Shape.Layers).Select(l =>
        {
            var positions = Enumerable.Range(0, Shape.KvHeads).Select(h => _rows[l, h].Keys.ToArray()).ToArray();
            var keys = new List<float>();
            var values = new List<float>();
            for (int h = 0; h < Shape.KvHeads; h++)
                foreach (var (p, stamp) in _rows[l, h])
                    for (int d = 0; d < Shape.HeadDim; d++)
                    {
                        keys.Add(l * 1e6f + h * 1e5f + p * 10f + d + stamp * 0.25f);
                        values.Add(-(l * 1e6f + h * 1e5f + p * 10f + d) - stamp * 0.5f);
                    }
            return new KvLayerBlock(l, positions, keys.ToArray(), values.ToArray());
        }).ToList();
    }

    private static List<WireKvBlock> Wire(IEnumerable<KvLayerBlock> blocks, KvPrecision precision) => blocks.Select(b => WireKvBlock.From(b, precision)).ToList();

    private static List<(WireKvBlock, int[][])> WireDelta(IEnumerable<KvLayerDelta> deltas, KvPrecision precision) =>
        deltas.Select(d => (WireKvBlock.From(d.Sent, precision), d.Removed)).ToList();

    private static long BytesOf(IEnumerable<WireKvBlock> blocks) => blocks.Sum(b => b.DataBytes);

    [Theory]
    [InlineData(KvPrecision.Fp32)]
    [InlineData(KvPrecision.Bf16)]
    public void A_base_plus_deltas_is_bit_for_bit_a_whole_put_of_the_same_cache(KvPrecision precision)
    {
        var shape = Shape with { Precision = precision };
        using var incremental = new KvSessionStore(1 << 24, TimeSpan.FromHours(1));
        using var whole = new KvSessionStore(1 << 24, TimeSpan.FromHours(1));
        var cache = new FakeCache();
        cache.Append(40, stamp: 0);
        var previous = cache.Capture();
        var v = incremental.Put("s", shape, "dense", cache.TokensSeen, Wire(previous, precision), false, 0).Kv;
        whole.Put("s", shape, "dense", cache.TokensSeen, Wire(previous, precision), false, 0);
        int step = 1;
        // Steps like the policies': append (dense), evict the oldest window and re-rotate the sinks
        // (sink_window), evict different tokens per head (qfilters), re-rotate everything (a frame wrap).
        Action[] steps =
        [
            () => cache.Append(16, step),
            () => { cache.Append(16, step); cache.Evict((_, _) => Enumerable.Range(4, 16)); cache.Touch(Enumerable.Range(0, 4), step); },
            () => { cache.Append(16, step); cache.Evict((l, h) => Enumerable.Range(20 + l + 2 * h, 7).Select(x => x * 2)); },
            () => cache.Touch(Enumerable.Range(0, 10_000), step),
            () => { cache.Evict((_, _) => Enumerable.Range(0, 10_000)); cache.Append(3, step); },
        ];
        foreach (var s in steps)
        {
            s();
            var next = cache.Capture();
            var delta = KvDelta.Diff(previous, next, Shape.HeadDim);
            v = incremental.PutDelta("s", shape, "dense", cache.TokensSeen, v.Version, v.TokensSeen, WireDelta(delta, precision), true, step).Kv;
            var expected = whole.Put("s", shape, "dense", cache.TokensSeen, Wire(next, precision), true, step).Kv;
            KvTestData.AssertSameBits(expected.Layers, incremental.Get("s")!.Layers);
            Assert.Equal((expected.TokensSeen, expected.Version, expected.OutputIndex), (v.TokensSeen, v.Version, v.OutputIndex));
            previous = next;
            step++;
        }
    }

    [Fact]
    public void A_delta_sends_only_what_changed()
    {
        var cache = new FakeCache();
        cache.Append(100, 0);
        var before = cache.Capture();
        cache.Append(16, 1);
        var dense = KvDelta.Diff(before, cache.Capture(), Shape.HeadDim);
        Assert.All(dense, d => Assert.All(d.Sent.Positions, p => Assert.Equal(Enumerable.Range(100, 16), p)));
        Assert.All(dense, d => Assert.All(d.Removed, r => Assert.Empty(r)));
        var mid = cache.Capture();
        cache.Append(16, 2);
        cache.Evict((_, _) => Enumerable.Range(4, 16));
        cache.Touch(Enumerable.Range(0, 4), 2);
        var sink = KvDelta.Diff(mid, cache.Capture(), Shape.HeadDim);
        int[] sinksAndNew = [0, 1, 2, 3, .. Enumerable.Range(116, 16)];
        Assert.All(sink, d => Assert.All(d.Sent.Positions, p => Assert.Equal(sinksAndNew, p)));
        Assert.All(sink, d => Assert.All(d.Removed, r => Assert.Equal(Enumerable.Range(4, 16), r)));
    }

    [Fact]
    public void A_delta_onto_another_version_than_its_base_is_refused_and_stores_nothing()
    {
        using var store = new KvSessionStore(1 << 24, TimeSpan.FromHours(1));
        var cache = new FakeCache();
        cache.Append(20, 0);
        var v1Blocks = cache.Capture();
        var v1 = store.Put("s", Shape, "dense", cache.TokensSeen, Wire(v1Blocks, KvPrecision.Fp32), false, 0).Kv;
        cache.Append(8, 1);
        var delta = WireDelta(KvDelta.Diff(v1Blocks, cache.Capture(), Shape.HeadDim), KvPrecision.Fp32);
        long bytes = store.Bytes;

        Assert.Throws<KvBaseMissingException>(() => store.PutDelta("s", Shape, "dense", cache.TokensSeen, v1.Version + 1, v1.TokensSeen, delta, true, 1));
        Assert.Throws<KvBaseMissingException>(() => store.PutDelta("s", Shape, "dense", cache.TokensSeen, v1.Version, v1.TokensSeen + 1, delta, true, 1)); // same number, other contents
        Assert.Throws<KvBaseMissingException>(() => store.PutDelta("other", Shape, "dense", cache.TokensSeen, v1.Version, v1.TokensSeen, delta, true, 1));
        Assert.Throws<KvBaseMissingException>(() => store.PutDelta("s", Shape with { Precision = KvPrecision.Bf16 }, "dense", cache.TokensSeen, v1.Version, v1.TokensSeen,
            WireDelta(KvDelta.Diff(v1Blocks, cache.Capture(), Shape.HeadDim), KvPrecision.Bf16), true, 1));
        // A delta that does not fit its base (a removed token the base lacks) is the writer's error.
        var bad = delta.Select(d => (d.Item1, d.Item2.Select(_ => new[] { 999 }).ToArray())).ToList();
        Assert.Throws<InvalidRequestException>(() => store.PutDelta("s", Shape, "dense", cache.TokensSeen, v1.Version, v1.TokensSeen, bad, true, 1));
        Assert.Equal(bytes, store.Bytes);
        Assert.Same(v1, store.Get("s"));

        store.Release("s");
        store.Put("s", Shape, "dense", 5, Wire(new FakeCache().Also(c => c.Append(5, 0)).Capture(), KvPrecision.Fp32), false, 0); // version 1 again, other contents
        Assert.Throws<KvBaseMissingException>(() => store.PutDelta("s", Shape, "dense", cache.TokensSeen, v1.Version, v1.TokensSeen, delta, true, 1));
        Assert.Equal(5, store.Get("s")!.TokensSeen);
    }

    [Fact]
    public async Task A_delta_racing_a_release_is_refused_or_released_never_stored_as_a_new_session()
    {
        // The delta reads its base, then stores base + delta: a release between the two must refuse it
        // (the writer then sends the whole cache), not store it as version 1 of a new session.
        using var store = new KvSessionStore(1 << 26, TimeSpan.FromHours(1));
        var cache = new FakeCache();
        cache.Append(200, 0);
        var before = cache.Capture();
        var baseBlocks = Wire(before, KvPrecision.Fp32);
        cache.Append(16, 1);
        var delta = WireDelta(KvDelta.Diff(before, cache.Capture(), Shape.HeadDim), KvPrecision.Fp32);
        int resurrected = 0;
        for (int i = 0; i < 300; i++)
        {
            var v1 = store.Put("s", Shape, "dense", 200, baseBlocks, false, 0).Kv;
            using var go = new Barrier(2);
            var put = Task.Run(() =>
            {
                go.SignalAndWait();
                try { store.PutDelta("s", Shape, "dense", 216, v1.Version, v1.TokensSeen, delta, true, 1); }
                catch (KvBaseMissingException) { }
            });
            var release = Task.Run(() =>
            {
                go.SignalAndWait();
                Thread.SpinWait(Random.Shared.Next(20_000));
                store.Release("s");
            });
            await Task.WhenAll(put, release);
            if (store.Get("s") is not null) resurrected++;
            store.Release("s");
        }
        Assert.Equal(0, resurrected);
    }

    [Fact]
    public void Checkpoints_kept_as_changes_never_take_more_than_the_whole_versions_kept()
    {
        using var store = new KvSessionStore(1 << 26, TimeSpan.FromHours(1));
        var cache = new FakeCache();
        cache.Append(64, 0);
        var previous = cache.Capture();
        var v = store.Put("s", Shape, "sink_window(4,60)", cache.TokensSeen, Wire(previous, KvPrecision.Fp32), false, 0).Kv;
        long first = v.Bytes;
        for (int step = 1; step <= 200; step++)
        {
            // sink_window(4, 60) at its budget: 16 new tokens, the 16 oldest window tokens out, sinks turned.
            int seen = cache.TokensSeen;
            cache.Append(16, step);
            cache.Evict((_, _) => Enumerable.Range(seen - 60, 16));
            cache.Touch(Enumerable.Range(0, 4), step);
            var next = cache.Capture();
            v = store.PutDelta("s", Shape, "sink_window(4,60)", cache.TokensSeen, v.Version, v.TokensSeen, WireDelta(KvDelta.Diff(previous, next, Shape.HeadDim), KvPrecision.Fp32), true, step).Kv;
            previous = next;
            // A sink_window's changes to the first version are at most its whole window: no chain of deltas grows.
            Assert.InRange(v.Bytes, 1, BytesOf(Wire(next, KvPrecision.Fp32)));
            Assert.True(store.Bytes <= (KvSessionStore.VersionsKept + 1) * first, $"step {step}: {store.Bytes} bytes held");
        }
        Assert.Equal(201, v.Version);
        Assert.Equal(Shape.Layers * (KvSessionStore.VersionsKept + 1), store.Blocks);
        KvTestData.AssertSameBits(Wire(previous, KvPrecision.Fp32), store.Get("s")!.Layers);
    }

    [Fact]
    public void A_dense_streams_checkpoints_take_the_tokens_it_added_not_a_cache_each()
    {
        using var store = new KvSessionStore(1 << 26, TimeSpan.FromHours(1));
        var cache = new FakeCache();
        cache.Append(400, 0); // the prompt
        var previous = cache.Capture();
        var v = store.Put("s", Shape, "dense", cache.TokensSeen, Wire(previous, KvPrecision.Fp32), false, 0).Kv;
        long prompt = store.Bytes, perToken = prompt / 400;
        var versions = new List<(long Version, List<KvLayerBlock> Blocks)> { (v.Version, previous) };
        for (int step = 1; step <= 8; step++)
        {
            cache.Append(16, step);
            var next = cache.Capture();
            v = store.PutDelta("s", Shape, "dense", cache.TokensSeen, v.Version, v.TokensSeen, WireDelta(KvDelta.Diff(previous, next, Shape.HeadDim), KvPrecision.Fp32), true, step).Kv;
            Assert.Equal(16 * step * perToken, v.Bytes); // the tokens generated so far
            Assert.Equal(400 + 16 * step, v.KeptTokens);
            versions.Add((v.Version, next));
            previous = next;
        }
        // The prompt's version and the last VersionsKept checkpoints' generated tokens (96, 112 and 128 of them);
        // materialized, those three would be caches of 496-528 tokens each.
        Assert.Equal(3, KvSessionStore.VersionsKept);
        Assert.Equal(prompt + (96 + 112 + 128) * perToken, store.Bytes);
        // The newest version described without making it whole.
        var described = store.Describe("s")!;
        Assert.Equal((v.Version, v.TokensSeen, v.OutputIndex, 0), (described.Version, described.TokensSeen, described.OutputIndex, described.Layers.Length));
        Assert.Equal(prompt + (96 + 112 + 128) * perToken, store.Bytes);
        // Each kept version reads back whole, bit for bit; the dropped ones are gone.
        foreach (var (version, blocks) in versions)
        {
            var got = store.Get("s", version);
            if (version is 1 or >= 7) KvTestData.AssertSameBits(Wire(blocks, KvPrecision.Fp32), got!.Layers);
            else Assert.Null(got);
        }
    }
}

internal static class TestExtensions
{
    public static T Also<T>(this T x, Action<T> f)
    {
        f(x);
        return x;
    }
}
