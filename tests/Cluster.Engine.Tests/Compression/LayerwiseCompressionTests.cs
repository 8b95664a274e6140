using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>
/// Layer-wise compression (issue 17, a prefill worker sends each layer while the later ones run): every
/// layer compressed by <see cref="KvCompressionPolicy.CompressLayer"/> from the model's
/// <see cref="LlamaModel.LayerDone"/> during the prompt's pass must leave the cache bit for bit as one
/// <see cref="KvCompressionPolicy.Compress(LlamaModel, SequenceKvCache)"/> after it, for every policy
/// on both eviction paths, and the prompt's logits must be the dense pass's.
/// </summary>
public sealed class LayerwiseCompressionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string, bool> Specs()
    {
        var data = new TheoryData<string, bool>();
        foreach (var spec in PolicyFixtures.EverySpec(64).Where(s => s != "dense"))
        {
            data.Add(spec, true);
            if (spec.StartsWith("window", StringComparison.Ordinal) || spec.StartsWith("sink_window", StringComparison.Ordinal)) data.Add(spec, false);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void Each_layer_compressed_as_it_finishes_equals_one_compression_after_the_pass(string spec, bool fastEviction)
    {
        using var model = Synthetic();
        var c = model.Config;
        var ids = RandomIds(150); // over the budget of 64, one chunk
        var policy = Policy(spec, c, fastEviction);

        using var after = model.CreateCache(ids.Length);
        var afterLogits = new float[c.VocabSize];
        KvRoom.Forward(model, ids, after, afterLogits);
        policy.Compress(model, after);

        using var during = model.CreateCache(ids.Length);
        var duringLogits = new float[c.VocabSize];
        var done = new List<int>();
        model.LayerDone = l =>
        {
            done.Add(l);
            policy.CompressLayer(model.Backend, model.Rope, during, l, ids.Length);
        };
        try
        {
            KvRoom.Forward(model, ids, during, duringLogits);
        }
        finally
        {
            model.LayerDone = null;
        }

        Assert.Equal(Enumerable.Range(0, c.Layers), done);
        Assert.Equal(afterLogits, duringLogits); // each layer attended over its dense KV before it was compressed
        Assert.Equal(after.TokensSeen, during.TokensSeen);
        for (int l = 0; l < c.Layers; l++)
            for (int h = 0; h < c.KvHeads; h++)
            {
                Assert.Equal(after.Layers[l].Lengths[h], during.Layers[l].Lengths[h]);
                Assert.Equal(PolicyFixtures.HeadPositions(after.Layers[l], h), PolicyFixtures.HeadPositions(during.Layers[l], h));
                Assert.Equal(PolicyFixtures.HeadRows(model, after.Layers[l], h, keys: true), PolicyFixtures.HeadRows(model, during.Layers[l], h, keys: true));
                Assert.Equal(PolicyFixtures.HeadRows(model, after.Layers[l], h, keys: false), PolicyFixtures.HeadRows(model, during.Layers[l], h, keys: false));
            }

        // And the streams go on alike under the policy.
        after.Policy = policy;
        during.Policy = policy;
        var next = RandomIds(20);
        Assert.Equal(PolicyFixtures.Stream(model, next, after), PolicyFixtures.Stream(model, next, during));
    }

    private static KvCompressionPolicy Policy(string spec, LlamaConfig c, bool fast) => PolicyFixtures.Parse(spec, c) switch
    {
        WindowPolicy w => new WindowPolicy(w.Window) { FastEviction = fast },
        SinkWindowPolicy s => new SinkWindowPolicy(s.Sinks, s.Window) { FastEviction = fast },
        var other => other,
    };

    private LlamaModel Synthetic() => PolicyFixtures.Synthetic(_dir);

    private static int[] RandomIds(int count) => PolicyFixtures.RandomIds(count, seed: count);
}
