using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;
using Cluster.Serving.Kv;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>
/// Issue 17: a decode worker makes a checkpoint's delta from its live cache (one head at a time, copying
/// only the rows it sends) instead of capturing the whole cache first. For every policy, after a stream
/// that appends, evicts and (window policies) leaves slots in ring order, the delta and the new digest
/// must equal those of the blocks read out independently (the fixture's own reordering of each head).
/// </summary>
public sealed class LiveCacheDeltaTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string> Specs => new(PolicyFixtures.EverySpec(24));

    [Theory]
    [MemberData(nameof(Specs))]
    public void A_delta_read_from_the_live_cache_equals_the_delta_of_its_blocks(string spec)
    {
        using var model = PolicyFixtures.Synthetic(_dir);
        int hd = model.Config.HeadDim;
        var ids = PolicyFixtures.RandomIds(70, seed: 9);
        using var cache = model.CreateCache(8, PolicyFixtures.Parse(spec, model.Config));
        PolicyFixtures.Stream(model, ids[..40], cache);
        var before = KvDigest.Of(Blocks(model, cache), hd);
        PolicyFixtures.Stream(model, ids[40..], cache);

        var expected = KvDelta.Diff(before, Blocks(model, cache), hd, out var expectedDigest);
        float[] scratch = new float[3]; // too small: the diff grows it
        var actual = KvDelta.Diff(before, model.Backend, cache, ref scratch, out var actualDigest);

        AssertSame(expected, expectedDigest, actual, actualDigest);
        // Every token streamed since that a head still holds is sent; a bounded policy also evicted some.
        for (int l = 0; l < actual.Count; l++)
            for (int h = 0; h < actual[l].Sent.Positions.Length; h++)
                Assert.Subset(actual[l].Sent.Positions[h].ToHashSet(), actualDigest.Layers[l].Positions[h].Where(p => p >= 40).ToHashSet());
        Assert.Contains(actual, d => d.Sent.Positions.Any(p => p.Length > 0));
        if (spec != "dense") Assert.Contains(actual, d => d.Removed.Any(r => r.Length > 0));
    }

    /// <summary>
    /// A checkpoint after a checkpoint: the second is diffed against the digest the first read from the live
    /// cache, which lets the diff skip the rows it digested while the layer's revision stands. Whatever the
    /// policy did in between (append only, evict, compact, re-rotate), the delta and digest must equal those
    /// of the blocks read out by the fixture.
    /// </summary>
    [Theory]
    [MemberData(nameof(Specs))]
    public void A_delta_against_the_last_live_digest_equals_the_delta_of_the_blocks(string spec)
    {
        using var model = PolicyFixtures.Synthetic(_dir);
        int hd = model.Config.HeadDim;
        var ids = PolicyFixtures.RandomIds(70, seed: 5);
        using var cache = model.CreateCache(8, PolicyFixtures.Parse(spec, model.Config));
        PolicyFixtures.Stream(model, ids[..40], cache);
        var (blocks40, live40) = LiveDigest(model, cache);
        PolicyFixtures.Stream(model, ids[40..], cache);

        float[] scratch = [];
        AssertSame(KvDelta.Diff(KvDigest.Of(blocks40, hd), Blocks(model, cache), hd, out var expectedDigest), expectedDigest,
            KvDelta.Diff(live40, model.Backend, cache, ref scratch, out var actualDigest), actualDigest);
    }

    /// <summary>A decode worker's first checkpoint after it restored a prompt's blocks: the digests of the blocks,
    /// bound to the layers they were restored into, stand for those rows as a live digest does.</summary>
    [Fact]
    public void A_delta_against_digests_bound_at_restore_equals_the_delta_of_the_blocks()
    {
        using var model = PolicyFixtures.Synthetic(_dir);
        var c = model.Config;
        int hd = c.HeadDim;
        var ids = PolicyFixtures.RandomIds(60, seed: 6);
        using var prompt = model.CreateCache(8, PolicyFixtures.Parse("dense", c));
        PolicyFixtures.Stream(model, ids[..40], prompt);
        var blocks40 = Blocks(model, prompt);
        var handle = new LlmCluster.V1.KvHandle { SessionId = "s", TokenCount = 40, Layout = new LlmCluster.V1.KvLayout { NumLayers = c.Layers, NumKvHeads = c.KvHeads, HeadDim = hd } };
        using var restore = new KvRestore.LayerByLayer(model, PolicyFixtures.Parse("dense", c), maxNewTokens: 30);
        var bound = KvDigest.Of(blocks40.Select(b => KvDigest.Of(b, hd, restore.Add(handle, b))).ToList());
        using var cache = restore.Finish(handle);
        PolicyFixtures.Stream(model, ids[40..], cache);

        float[] scratch = [];
        var actual = KvDelta.Diff(bound, model.Backend, cache, ref scratch, out var actualDigest);
        AssertSame(KvDelta.Diff(KvDigest.Of(blocks40, hd), Blocks(model, cache), hd, out var expectedDigest), expectedDigest, actual, actualDigest);
        Assert.All(actual, d => Assert.All(d.Sent.Positions, p => Assert.Equal(Enumerable.Range(40, 20), p)));
    }

    /// <summary>Truncation keeps the positions before the cut, then the same positions come back with other
    /// rows: the digest's rows no longer describe them, and the delta must send them again.</summary>
    [Fact]
    public void Rows_truncated_and_appended_again_are_sent_again()
    {
        using var model = PolicyFixtures.Synthetic(_dir);
        int hd = model.Config.HeadDim;
        var ids = PolicyFixtures.RandomIds(60, seed: 3);
        using var cache = model.CreateCache(8, PolicyFixtures.Parse("dense", model.Config));
        PolicyFixtures.Stream(model, ids[..40], cache);
        var (blocks40, live40) = LiveDigest(model, cache);
        cache.Truncate(30);
        PolicyFixtures.Stream(model, ids[40..], cache); // positions 30-49, other tokens than before at 30-39

        float[] scratch = [];
        var actual = KvDelta.Diff(live40, model.Backend, cache, ref scratch, out var actualDigest);
        AssertSame(KvDelta.Diff(KvDigest.Of(blocks40, hd), Blocks(model, cache), hd, out var expectedDigest), expectedDigest, actual, actualDigest);
        Assert.All(actual, d => Assert.All(d.Sent.Positions, p => Assert.Equal(Enumerable.Range(30, 20), p)));
    }

    /// <summary>The other side of the revision contract: rows digested from the live layer are not read again
    /// while its revision stands. A row changed behind the cache's back (a raw device write that does not
    /// count as a rewrite) therefore goes unnoticed, which shows that the diff read only the appended rows;
    /// after an operation that counts as a rewrite (the truncation test) it is read again.</summary>
    [Fact]
    public void Rows_digested_from_the_live_layer_are_not_read_again_while_its_revision_stands()
    {
        using var model = PolicyFixtures.Synthetic(_dir);
        int hd = model.Config.HeadDim;
        var ids = PolicyFixtures.RandomIds(50, seed: 4);
        using var cache = model.CreateCache(8, PolicyFixtures.Parse("dense", model.Config));
        PolicyFixtures.Stream(model, ids[..40], cache);
        var (_, live40) = LiveDigest(model, cache);
        var layer = cache.Layers[0];
        model.Backend.CopyFromHost(Enumerable.Repeat(7f, hd).ToArray(), layer.K, layer.Offset(0, 5)); // not counted
        PolicyFixtures.Stream(model, ids[40..], cache);

        float[] scratch = [];
        var delta = KvDelta.Diff(live40, model.Backend, cache, ref scratch, out _);
        Assert.Equal(Enumerable.Range(40, 10), delta[0].Sent.Positions[0]);
        // The whole read (a digest of blocks) does see the changed row.
        var whole = KvDelta.Diff(KvDigest.Of(live40.Layers.Select(l => l with { Source = null })), model.Backend, cache, ref scratch, out _);
        Assert.Contains(5, whole[0].Sent.Positions[0]);
    }

    /// <summary>The cache's blocks as the fixture reads them out, and the digest a live diff against them leaves
    /// (bound to the cache's layers, as a decode worker's last checkpoint is).</summary>
    private static (List<KvLayerBlock> Blocks, KvDigest Live) LiveDigest(LlamaModel model, SequenceKvCache cache)
    {
        var blocks = Blocks(model, cache);
        float[] scratch = [];
        KvDelta.Diff(KvDigest.Of(blocks, model.Config.HeadDim), model.Backend, cache, ref scratch, out var live);
        return (blocks, live);
    }

    private static void AssertSame(List<KvLayerDelta> expected, KvDigest expectedDigest, List<KvLayerDelta> actual, KvDigest actualDigest)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int l = 0; l < expected.Count; l++)
        {
            Assert.Equal(expected[l].Layer, actual[l].Layer);
            Assert.Equal(expected[l].Sent.Positions, actual[l].Sent.Positions);
            Assert.Equal(expected[l].Removed, actual[l].Removed);
            Assert.Equal(expected[l].Sent.Keys, actual[l].Sent.Keys);
            Assert.Equal(expected[l].Sent.Values, actual[l].Sent.Values);
            Assert.Equal(expectedDigest.Layers[l].Positions, actualDigest.Layers[l].Positions);
            Assert.Equal(expectedDigest.Layers[l].Keys, actualDigest.Layers[l].Keys);
            Assert.Equal(expectedDigest.Layers[l].Values, actualDigest.Layers[l].Values);
        }
    }

    /// <summary>The cache as blocks, each head's rows put in original order by the fixture (not by the code under test).</summary>
    private static List<KvLayerBlock> Blocks(LlamaModel model, SequenceKvCache cache) =>
        [.. cache.Layers.Select((layer, l) =>
        {
            var heads = Enumerable.Range(0, layer.KvHeads).ToArray();
            return new KvLayerBlock(l,
                [.. heads.Select(h => PolicyFixtures.HeadPositions(layer, h))],
                [.. heads.SelectMany(h => PolicyFixtures.HeadRows(model, layer, h, keys: true))],
                [.. heads.SelectMany(h => PolicyFixtures.HeadRows(model, layer, h, keys: false))]);
        })];
}
