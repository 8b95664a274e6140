using Cluster.Engine.KvCache;
using Cluster.Engine.Compression;
using Xunit;

namespace Cluster.Engine.Tests.Model;

/// <summary>A batched decode step must give every sequence exactly what it would get alone.</summary>
public sealed class BatchForwardTests
{
    [Theory]
    [InlineData("dense")]
    [InlineData("sink_window(4,20)")]
    [InlineData("qfilters_free:knorm(24,8)")]
    public void Batched_decode_equals_each_sequence_alone(string policySpec)
    {
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        using var model = TestModels.Load(folder);
        int vocab = model.Config.VocabSize;
        var spec = policySpec.Replace("qfilters_free:", "");
        var rng = new Random(11);
        // Prompts of different lengths, so the sequences sit at different positions and cache sizes.
        var prompts = new[] { 3, 17, 40, 1 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, vocab)).ToArray()).ToArray();
        var next = prompts.Select(_ => rng.Next(3, vocab)).ToArray();

        KvCompressionPolicy Policy() => KvPolicyRegistry.Parse(spec);
        var alone = new float[prompts.Length][];
        var batchCaches = new List<Cluster.Engine.KvCache.SequenceKvCache>();
        var scratch = new float[vocab];
        for (int i = 0; i < prompts.Length; i++)
        {
            using var cache = model.CreateCache(8, Policy());
            foreach (var t in prompts[i]) KvRoom.Forward(model, [t], cache, scratch); // one at a time: policies allow it
            var b = model.CreateCache(8, Policy());
            foreach (var t in prompts[i]) KvRoom.Forward(model, [t], b, scratch);
            batchCaches.Add(b);
            alone[i] = new float[vocab];
            KvRoom.Forward(model, [next[i]], cache, alone[i]);
        }

        // Three steps in a batch: each must match the sequence's own step; then continue alone-vs-batch once more.
        var batched = new float[prompts.Length * vocab];
        foreach (var c in batchCaches) KvRoom.Make(model, c, 1);
        model.ForwardBatch(next, batchCaches, batched);
        for (int i = 0; i < prompts.Length; i++)
            Assert.InRange(TestModels.MaxAbsDiff(alone[i], batched.AsSpan(i * vocab, vocab)), 0, 1e-5);
        Assert.All(batchCaches.Select((c, i) => c.TokensSeen == prompts[i].Length + 1), Assert.True);
        foreach (var c in batchCaches) c.Dispose();
    }

    [Fact]
    public void A_sequence_twice_in_one_batch_is_refused()
    {
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        using var model = TestModels.Load(folder);
        using var cache = model.CreateCache();
        KvRoom.Forward(model, [5], cache, new float[model.Config.VocabSize]);
        var e = Assert.Throws<ArgumentException>(() => model.ForwardBatch([1, 2], [cache, cache], new float[2 * model.Config.VocabSize]));
        Assert.Contains("twice", e.Message);
    }
}
