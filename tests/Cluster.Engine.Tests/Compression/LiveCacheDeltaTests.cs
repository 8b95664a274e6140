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
        // Every token streamed since that a head still holds is sent; a bounded policy also evicted some.
        for (int l = 0; l < actual.Count; l++)
            for (int h = 0; h < actual[l].Sent.Positions.Length; h++)
                Assert.Subset(actual[l].Sent.Positions[h].ToHashSet(), actualDigest.Layers[l].Positions[h].Where(p => p >= 40).ToHashSet());
        Assert.Contains(actual, d => d.Sent.Positions.Any(p => p.Length > 0));
        if (spec != "dense") Assert.Contains(actual, d => d.Removed.Any(r => r.Length > 0));
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
