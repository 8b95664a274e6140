using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>
/// window and sink_window's fast eviction (ring of slots, sink_window in a rotation frame) against their
/// general path (score, sort, compact, re-rotate every moved key), which stays callable with
/// FastEviction = false: per-token logits of a long stream must agree to 1e-4 relative (issue 16).
/// </summary>
public sealed class FastEvictionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string> Specs => new() { "window(64)", "sink_window(4,60)", "sink_window(1,63)" };

    [SharedDataTheory]
    [MemberData(nameof(Specs))]
    public void Stories260K_stream_of_600_tokens_matches_the_general_path(string spec)
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        AssertStreamsMatch(model, TestModels.TinyStoriesIds(600), spec);
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void Synthetic_gqa_stream_of_600_tokens_matches_the_general_path(string spec)
    {
        using var model = Synthetic();
        AssertStreamsMatch(model, RandomIds(600), spec);
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void Chunks_bulk_compression_and_room_for_a_turn_match_the_general_path(string spec)
    {
        // Several evictions at once: a long prompt compressed in bulk, chunks of 7 under the policy,
        // room made for a turn, then decode steps.
        using var model = Synthetic();
        var ids = RandomIds(400);
        var (fast, general) = (Run(model, ids, Parse(spec, fast: true)), Run(model, ids, Parse(spec, fast: false)));
        AssertClose(general, fast);

        static float[] Run(LlamaModel model, int[] ids, KvCompressionPolicy policy)
        {
            int vocab = model.Config.VocabSize;
            var logits = new List<float>();
            var step = new float[7 * vocab];
            using var cache = model.CreateCache(100);
            KvRoom.Forward(model, ids[..100], cache, step.AsSpan(0, vocab));
            policy.Compress(model, cache);
            cache.Policy = policy;
            for (int t = 100; t < 200; t += 7)
            {
                var chunk = ids[t..Math.Min(t + 7, 200)];
                KvRoom.Forward(model, chunk, cache, step, allLogits: true);
                logits.AddRange(step.AsSpan(0, chunk.Length * vocab).ToArray());
            }
            policy.MakeRoom(model, cache, 30);
            logits.AddRange(PolicyFixtures.Stream(model, ids[200..], cache));
            return logits.ToArray();
        }
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void A_snapshot_of_a_ring_ordered_cache_lists_tokens_in_order_and_continues_identically(string spec)
    {
        using var model = Synthetic();
        var ids = RandomIds(300);
        var policy = Parse(spec, fast: true);
        using var cache = model.CreateCache(8, policy);
        PolicyFixtures.Stream(model, ids[..240], cache);
        Assert.NotEqual(PolicyFixtures.SlotPositions(cache.Layers[0], 0), PolicyFixtures.HeadPositions(cache.Layers[0], 0)); // ring order
        using var restored = model.CreateCache(8, policy);
        for (int l = 0; l < cache.Layers.Length; l++)
        {
            var block = KvCacheSnapshot.Capture(model.Backend, cache, l);
            Assert.All(block.Positions, p => Assert.Equal(p.Order(), p));
            KvCacheSnapshot.Restore(model.Backend, restored, block);
        }
        KvCacheSnapshot.SetTokensSeen(restored, cache.TokensSeen);
        AssertClose(PolicyFixtures.Stream(model, ids[240..], cache), PolicyFixtures.Stream(model, ids[240..], restored));
    }

    [Fact]
    public void Sink_window_rotations_stay_bounded_by_the_frame()
    {
        // The frame origin wraps every budget evictions, so a long stream never rotates past 2 x budget.
        using var model = Synthetic();
        var policy = new SinkWindowPolicy(4, 12);
        using var cache = model.CreateCache(8, policy);
        var logits = new float[model.Config.VocabSize];
        foreach (var id in RandomIds(200))
        {
            KvRoom.Forward(model, [id], cache, logits);
            Assert.InRange(policy.QueryPosition(cache), cache.Length, cache.Length + policy.Budget!.Value - 1);
        }
    }

    private static void AssertStreamsMatch(LlamaModel model, int[] ids, string spec)
    {
        using var fastCache = model.CreateCache(8, Parse(spec, fast: true));
        using var generalCache = model.CreateCache(8, Parse(spec, fast: false));
        var fast = PolicyFixtures.Stream(model, ids, fastCache);
        var general = PolicyFixtures.Stream(model, ids, generalCache);
        AssertClose(general, fast);
        Assert.InRange(Math.Abs(Perplexity(model, ids, fast) / Perplexity(model, ids, general) - 1), 0, 1e-4);
    }

    /// <summary>Max |a - b| over the stream, relative to the largest logit magnitude.</summary>
    private static void AssertClose(float[] expected, float[] actual)
    {
        double scale = expected.Max(MathF.Abs);
        Assert.InRange(TestModels.MaxAbsDiff(expected, actual) / scale, 0, 1e-4);
    }

    private static double Perplexity(LlamaModel model, int[] ids, float[] logits)
    {
        int vocab = model.Config.VocabSize;
        double nll = 0;
        for (int t = 0; t + 1 < ids.Length; t++)
        {
            var row = logits.AsSpan(t * vocab, vocab);
            float max = float.NegativeInfinity;
            foreach (var v in row) max = Math.Max(max, v);
            double sum = 0;
            foreach (var v in row) sum += Math.Exp(v - max);
            nll += Math.Log(sum) + max - row[ids[t + 1]];
        }
        return Math.Exp(nll / (ids.Length - 1));
    }

    private static KvCompressionPolicy Parse(string spec, bool fast) => KvPolicyRegistry.Parse(spec) switch
    {
        WindowPolicy w => new WindowPolicy(w.Window) { FastEviction = fast },
        SinkWindowPolicy s => new SinkWindowPolicy(s.Sinks, s.Window) { FastEviction = fast },
        var other => throw new ArgumentException($"no fast path for {other.Name}"),
    };

    private LlamaModel Synthetic() => PolicyFixtures.Synthetic(_dir);

    private static int[] RandomIds(int count) => PolicyFixtures.RandomIds(count, seed: 16);
}
