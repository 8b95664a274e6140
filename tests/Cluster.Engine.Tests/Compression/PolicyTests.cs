using Cluster.Engine.KvCache;
using Cluster.Engine.Compression;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>Every registered policy, on the synthetic GQA model (no shared data needed).</summary>
public sealed class PolicyTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Cluster.Engine.Model.LlamaModel _model;
    private readonly int[] _ids;

    public PolicyTests()
    {
        var folder = _dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        _model = TestModels.Load(folder);
        var rng = new Random(4);
        _ids = Enumerable.Range(0, 96).Select(_ => rng.Next(3, 259)).ToArray();
    }

    public void Dispose()
    {
        _model.Dispose();
        _dir.Dispose();
    }

    public static TheoryData<string> Specs(int budget) => new(PolicyFixtures.EverySpec(budget));

    /// <summary>The bounded policies only (dense has no budget, so it would repeat a test case).</summary>
    public static TheoryData<string> BoundedSpecs(int budget) => new(PolicyFixtures.EverySpec(budget).Where(s => s != "dense"));

    [Theory]
    [MemberData(nameof(Specs), 96)]
    [MemberData(nameof(BoundedSpecs), 200)]
    public void Budget_at_least_the_length_gives_the_dense_logits_exactly(string spec)
    {
        using var dense = _model.CreateCache(8, new DensePolicy());
        var expected = PolicyFixtures.Stream(_model, _ids, dense);
        var policy = PolicyFixtures.Parse(spec, _model.Config);
        using var cache = _model.CreateCache(8, policy);
        Assert.Equal(expected, PolicyFixtures.Stream(_model, _ids, cache));
    }

    [Theory]
    [MemberData(nameof(Specs), 24)]
    public void Decoding_holds_the_budget_and_never_grows_past_it(string spec)
    {
        var policy = PolicyFixtures.Parse(spec, _model.Config);
        using var cache = _model.CreateCache(8, policy);
        PolicyFixtures.Stream(_model, _ids, cache);
        int expected = policy.Budget ?? _ids.Length;
        foreach (var layer in cache.Layers)
        {
            Assert.All(layer.Lengths, n => Assert.Equal(expected, n));
            if (policy.Budget is int b) Assert.True(layer.Capacity <= b, $"capacity {layer.Capacity} > budget {b}");
            for (int h = 0; h < layer.KvHeads; h++)
            {
                var positions = PolicyFixtures.SlotPositions(layer, h);
                Assert.Equal(positions.Length, positions.Distinct().Count()); // each token once (slots may be in ring order)
                Assert.Equal(_ids.Length - 1, positions[^1]);               // the newest token is always kept
            }
        }
    }

    [Theory]
    [MemberData(nameof(Specs), 24)]
    public void Bulk_compression_leaves_the_budget_and_decoding_continues(string spec)
    {
        var policy = PolicyFixtures.Parse(spec, _model.Config);
        using var cache = _model.CreateCache(_ids.Length);
        var logits = new float[_model.Config.VocabSize];
        KvRoom.Forward(_model, _ids, cache, logits);                    // a long prompt, prefilled densely
        policy.Compress(_model, cache);
        cache.Policy = policy;
        Assert.Equal(policy.Budget ?? _ids.Length, cache.Length);
        KvRoom.Forward(_model, [5], cache, logits);
        KvRoom.Forward(_model, [6], cache, logits);
        Assert.Equal(policy.Budget ?? _ids.Length + 2, cache.Length);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void Window_streaming_equals_a_fresh_run_over_the_window_for_layer_0_exactly()
    {
        const int W = 32;
        using var cache = _model.CreateCache(8, new WindowPolicy(W));
        PolicyFixtures.Stream(_model, _ids, cache);
        using var fresh = _model.CreateCache(W);
        fresh.StartAt(_ids.Length - W);
        PolicyFixtures.Stream(_model, _ids[^W..], fresh);
        for (int h = 0; h < _model.Config.KvHeads; h++)
        {
            Assert.Equal(PolicyFixtures.HeadPositions(fresh.Layers[0], h), PolicyFixtures.HeadPositions(cache.Layers[0], h));
            Assert.Equal(PolicyFixtures.HeadRows(_model, fresh.Layers[0], h, keys: true), PolicyFixtures.HeadRows(_model, cache.Layers[0], h, keys: true));
            Assert.Equal(PolicyFixtures.HeadRows(_model, fresh.Layers[0], h, keys: false), PolicyFixtures.HeadRows(_model, cache.Layers[0], h, keys: false));
        }
    }

    [Fact]
    public void Sink_window_keys_sit_at_their_cache_index_after_bulk_and_per_step_eviction()
    {
        // Layer-0 keys depend only on token and RoPE position, so after compression the key of rank j must
        // be the one a dense run gives the same token at position j (plus the frame origin).
        var policy = new SinkWindowPolicy(4, 20);
        using var cache = _model.CreateCache(_ids.Length);
        var logits = new float[_model.Config.VocabSize];
        KvRoom.Forward(_model, _ids[..60], cache, logits);
        policy.Compress(_model, cache);                                  // bulk: slots 0..3 and 40..59
        cache.Policy = policy;
        PolicyFixtures.Stream(_model, _ids[60..70], cache);              // per step: 10 more evictions
        int[] kept = [0, 1, 2, 3, .. Enumerable.Range(50, 20)];
        // The fast path keeps all rotations shifted by its frame origin (attention sees only differences).
        int origin = policy.QueryPosition(cache) - cache.Length;
        using var reference = _model.CreateCache(kept.Length);
        reference.StartAt(origin);
        KvRoom.Forward(_model, kept.Select(i => _ids[i]).ToArray(), reference, logits);
        for (int h = 0; h < _model.Config.KvHeads; h++)
        {
            Assert.Equal(kept, PolicyFixtures.HeadPositions(cache.Layers[0], h));
            var ours = PolicyFixtures.HeadRows(_model, cache.Layers[0], h, keys: true);
            var expected = PolicyFixtures.HeadRows(_model, reference.Layers[0], h, keys: true);
            Assert.InRange(TestModels.MaxAbsDiff(ours, expected), 0, 1e-5);
        }
    }

    [Fact]
    public void Rerotated_window_equals_sink_window_without_sinks()
    {
        using var rerotated = _model.CreateCache(8, PolicyFixtures.Parse("rerotate(window(20))", _model.Config));
        // Both on the general path (score, sort, compact, re-rotate): the same code, the same bits.
        using var sinkless = _model.CreateCache(8, new SinkWindowPolicy(0, 20) { FastEviction = false });
        Assert.Equal(PolicyFixtures.Stream(_model, _ids, sinkless), PolicyFixtures.Stream(_model, _ids, rerotated));
    }

    [Fact]
    public void Dense_past_the_context_is_refused_unless_extrapolation_is_allowed()
    {
        int context = _model.Config.MaxPositions;
        var logits = new float[_model.Config.VocabSize];
        var prompt = Enumerable.Repeat(5, context).ToArray();
        using var cache = _model.CreateCache(context, new DensePolicy());
        KvRoom.Forward(_model, prompt, cache, logits);                           // exactly the context: fine
        var e = Assert.Throws<ContextExceededException>(() => KvRoom.Forward(_model, [5], cache, logits));
        Assert.Contains("past the model's context", e.Message);
        using var extrapolating = _model.CreateCache(context, new DensePolicy(allowExtrapolation: true));
        KvRoom.Forward(_model, prompt, extrapolating, logits);
        KvRoom.Forward(_model, [5], extrapolating, logits);
        Assert.Equal(context + 1, extrapolating.TokensSeen);
    }

    [Fact]
    public void A_chunk_larger_than_the_budget_is_a_clear_error()
    {
        using var cache = _model.CreateCache(8, new WindowPolicy(16));
        var e = Assert.Throws<ArgumentException>(() => KvRoom.Forward(_model, _ids[..17], cache, new float[_model.Config.VocabSize]));
        Assert.Contains("exceeds the budget", e.Message);
    }

    [Theory]
    [InlineData("knorm(24,6)")]
    [InlineData("qfilters(24,6)")]
    public void The_highest_scores_are_the_ones_kept_in_every_head(string spec)
    {
        var policy = PolicyFixtures.Parse(spec, _model.Config);
        using var cache = _model.CreateCache(_ids.Length);
        var logits = new float[_model.Config.VocabSize];
        KvRoom.Forward(_model, _ids, cache, logits);
        var filters = ((PolicyFixtures.Parse("qfilters(24,6)", _model.Config) as QFiltersPolicy)!).Filters;
        var before = cache.Clone();
        policy.Compress(_model, cache);
        bool anyHeadsDiffer = false;
        for (int l = 0; l < cache.Layers.Length; l++)
            for (int h = 0; h < _model.Config.KvHeads; h++)
            {
                var keys = PolicyFixtures.HeadRows(_model, before.Layers[l], h, keys: true);
                int hd = _model.Config.HeadDim, n = _ids.Length;
                double Score(int slot)
                {
                    var k = keys.AsSpan(slot * hd, hd);
                    return spec.StartsWith("knorm") ? -Math.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(k))
                        : -System.Numerics.Tensors.TensorPrimitives.Dot(k, filters.Filter(l, h));
                }
                var expected = Enumerable.Range(0, n - 6).OrderByDescending(Score).Take(18).Concat(Enumerable.Range(n - 6, 6)).Order().ToArray();
                var kept = PolicyFixtures.HeadPositions(cache.Layers[l], h);
                Assert.Equal(expected, kept);
                if (h > 0 && !kept.SequenceEqual(PolicyFixtures.HeadPositions(cache.Layers[l], 0))) anyHeadsDiffer = true;
            }
        Assert.True(anyHeadsDiffer, "per-head selection should keep different tokens in some head");
        before.Dispose();
    }

    [Theory]
    [InlineData("dense", "dense")]
    [InlineData(" window( 256 ) ", "window(256)")]
    [InlineData("sink_window(4,252)", "sink_window(4,252)")]
    [InlineData("sink_window(252)", "sink_window(4,252)")]
    [InlineData("qfilters(256,32)", "qfilters(256,32)")]
    [InlineData("knorm(256,32)", "knorm(256,32)")]
    [InlineData("rerotate( knorm(256,32) )", "rerotate(knorm(256,32))")]
    public void Specs_parse_to_their_canonical_name(string spec, string name) =>
        Assert.Equal(name, PolicyFixtures.Parse(spec, _model.Config).Name);

    [Theory]
    [InlineData("", "not of the form")]                   // empty
    [InlineData("h2o(256)", "unknown policy")]            // not registered
    [InlineData("window", "expected window(W)")]          // missing its size
    [InlineData("window(0)", "at least 1")]               // empty window
    [InlineData("window(a)", "not an integer")]
    [InlineData("knorm(16,32)", "at least the window")]   // window larger than the budget
    [InlineData("sink_window(1,2,3)", "expected sink_window")]
    [InlineData("rerotate(dense)", "bounded policy")]           // nothing to re-rotate
    [InlineData("rerotate(window(0))", "at least 1")]
    [InlineData("wrap(window(8))", "unknown policy")]
    public void Bad_specs_name_what_is_wrong(string spec, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => PolicyFixtures.Parse(spec, _model.Config));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Qfilters_without_filters_asks_for_them() =>
        Assert.Contains("--qfilters FILE", Assert.Throws<ArgumentException>(() => KvPolicyRegistry.Parse("qfilters(256,32)")).Message);
}
