using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Compression;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.KvCache;

/// <summary>Room is made by the KV layer (<see cref="KvRoom"/>), never inside the model's forward pass
/// (issue 16); the model only checks it. On the synthetic GQA model (no shared data needed).</summary>
public sealed class KvRoomTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly LlamaModel _model;
    private readonly int[] _ids = PolicyFixtures.RandomIds(500, seed: 9);

    public KvRoomTests() => _model = PolicyFixtures.Synthetic(_dir);

    public void Dispose()
    {
        _model.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public void The_forward_pass_never_asks_the_policy_to_evict()
    {
        var policy = new TrapPolicy(budget: 16);
        using var cache = _model.CreateCache(4, policy);
        var logits = new float[_model.Config.VocabSize];
        foreach (var id in _ids[..60])
        {
            KvRoom.Make(_model, cache, 1);
            policy.Armed = true; // any eviction from here on comes from the model
            _model.Forward([id], cache, logits);
            policy.Armed = false;
        }
        Assert.Equal(60, cache.TokensSeen);
        Assert.Equal(16, cache.Length);
        Assert.True(policy.Scored > 0, "the room was made by evicting, outside the pass");
    }

    [Fact]
    public void A_long_prompt_under_a_bounded_policy_evicts_between_chunks_and_equals_chunk_by_chunk_runs()
    {
        // Chunks of 8 under a budget of 20: the policy must evict before every chunk after the second.
        using var model = ModelLoader.Load(_dir.File("tiny"), maxChunk: 8);
        var policy = new TrapPolicy(budget: 20);
        using var cache = model.CreateCache(4, policy);
        var logits = new float[model.Config.VocabSize];
        // Armed from the first layer's RoPE of a pass to the last layer's attention: the pass itself.
        model.QueryTap = (layer, _, _) => { if (layer == 0) policy.Armed = true; };
        model.LayerDone = layer => { if (layer == model.Config.Layers - 1) policy.Armed = false; };
        KvRoom.Forward(model, _ids[..60], cache, logits);
        model.QueryTap = null;
        model.LayerDone = null;
        Assert.Equal((60, 20), (cache.TokensSeen, cache.Length));
        Assert.True(policy.Scored > 0);

        using var reference = model.CreateCache(4, new TrapPolicy(budget: 20));
        var expected = new float[model.Config.VocabSize];
        for (int start = 0; start < 60; start += 8)
        {
            var chunk = _ids.AsSpan(start, Math.Min(8, 60 - start));
            KvRoom.Make(model, reference, chunk.Length);
            model.Forward(chunk, reference, expected);
        }
        Assert.Equal(expected, logits);
        Assert.Equal(PolicyFixtures.HeadPositions(reference.Layers[^1], 0), PolicyFixtures.HeadPositions(cache.Layers[^1], 0));
    }

    [Fact]
    public void A_caller_that_forgot_to_make_room_gets_a_clear_error_and_an_untouched_cache()
    {
        var logits = new float[_model.Config.VocabSize];
        using var bounded = _model.CreateCache(16, new WindowPolicy(16));
        KvRoom.Forward(_model, _ids[..16], bounded, logits);
        var e = Assert.Throws<InvalidOperationException>(() => _model.Forward([_ids[16]], bounded, logits));
        Assert.Contains("KvRoom", e.Message);
        Assert.Equal((16, 16), (bounded.TokensSeen, bounded.Length));
        Assert.Throws<InvalidOperationException>(() => _model.ForwardBatch([_ids[16]], [bounded], logits));

        using var dense = _model.CreateCache(4);
        Assert.Throws<InvalidOperationException>(() => _model.Forward(_ids[..5], dense, logits));
        Assert.Equal(0, dense.TokensSeen);
        KvRoom.Forward(_model, _ids[..5], dense, logits); // the same tokens with room made
        Assert.Equal(5, dense.TokensSeen);
    }

    [Fact]
    public void Dense_makes_room_exactly_as_the_cache_without_a_policy_did()
    {
        // The path a cache without a policy took before issue 16: reserve all the tokens, run, no
        // eviction, RoPE at the original positions. The dense policy must give the same bits.
        int vocab = _model.Config.VocabSize, prompt = 300; // more than one chunk of 256
        using var old = _model.CreateCache(1);
        using var dense = _model.CreateCache(1, new DensePolicy());
        var expected = new float[vocab];
        var got = new float[vocab];
        old.Reserve(prompt);
        _model.Forward(_ids[..prompt], old, expected);
        KvRoom.Forward(_model, _ids[..prompt], dense, got);
        Assert.Equal(expected, got);
        Assert.Equal(old.Capacity, dense.Capacity);
        for (int t = prompt; t < _ids.Length; t++)
        {
            Assert.Equal(dense.TokensSeen, dense.Policy.QueryPosition(dense));
            old.Reserve(1);
            _model.Forward([_ids[t]], old, expected);
            KvRoom.Forward(_model, [_ids[t]], dense, got);
            Assert.Equal(expected, got);
            Assert.Equal(old.Capacity, dense.Capacity); // grown by doubling at the same steps
        }
        Assert.Equal((_ids.Length, _ids.Length), (dense.TokensSeen, dense.Length));
    }

    /// <summary>A window-like bounded policy (keeps the newest) that throws if it is asked to evict while
    /// <see cref="Armed"/>. It has no fast path, so every eviction goes through <see cref="Score"/>.</summary>
    private sealed class TrapPolicy(int budget) : KvCompressionPolicy
    {
        public bool Armed { get; set; }

        public int Scored { get; private set; }

        public override int? Budget => budget;

        public override string Name => $"trap({budget})";

        public override void BeforeAppend(LlamaModel model, SequenceKvCache cache, int incoming)
        {
            if (Armed) throw new InvalidOperationException("the policy was asked to make room during the forward pass");
            base.BeforeAppend(model, cache, incoming);
        }

        protected override void Score(in SlotView view, Span<float> scores)
        {
            if (Armed) throw new InvalidOperationException("the policy was asked to evict during the forward pass");
            Scored++;
            for (int i = 0; i < scores.Length; i++) scores[i] = i; // newest first
        }
    }
}
