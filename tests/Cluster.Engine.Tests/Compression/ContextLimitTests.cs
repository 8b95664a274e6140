using Cluster.Engine.Compression;
using Cluster.Engine.Evaluation;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>The one context check (<see cref="ContextLimit"/>) at its boundaries, and the places that
/// ask it: making room, generation's length limit, a conversation turn's admission.</summary>
public sealed class ContextLimitTests : IDisposable
{
    private const int Context = 1024;
    private readonly TempDir _dir = new();
    private readonly LlamaModel _model;

    public ContextLimitTests()
    {
        _model = PolicyFixtures.Synthetic(_dir);
        Assert.Equal(Context, _model.Config.MaxPositions);
    }

    public void Dispose()
    {
        _model.Dispose();
        _dir.Dispose();
    }

    public static TheoryData<string, int, int, bool> Cases => new()
    {
        // dense: tokens seen + incoming may reach the context, not pass it
        { "dense", Context - 1, 1, true },
        { "dense", Context, 1, false },
        { "dense", 0, Context, true },
        { "dense", 0, Context + 1, false },
        { "dense", Context - 20, 20, true },
        { "dense", Context - 20, 21, false },
        { "dense", int.MaxValue, 1, false }, // no overflow into "fits"
        // extrapolation asked for: no bound
        { "dense+extrapolate", Context, 1, true },
        { "dense+extrapolate", 4 * Context, 100, true },
        // bounded policies evict: no bound
        { "window(16)", 4 * Context, 100, true },
        { "sink_window(4,20)", 4 * Context, 100, true },
        { "knorm(32,8)", Context, Context, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Fits_at_the_boundaries(string spec, int seen, int incoming, bool fits)
    {
        var policy = spec == "dense+extrapolate" ? new DensePolicy(allowExtrapolation: true) : KvPolicyRegistry.Parse(spec);
        Assert.Equal(fits, ContextLimit.Fits(policy, seen, incoming, Context));
        var why = ContextLimit.Refusal(policy, seen, incoming, Context);
        Assert.Equal(fits, why is null);
        if (why is not null) Assert.Contains("context exhausted", why);
    }

    [Fact]
    public void Making_room_refuses_exactly_past_the_context()
    {
        using var cache = _model.CreateCache(8);
        cache.StartAt(Context - 8);
        KvRoom.Make(_model, cache, 8); // up to the last position: fine
        Assert.Throws<ContextExceededException>(() => KvRoom.Make(_model, cache, 9));
        Assert.Equal(Context - 8, cache.TokensSeen);
    }

    [Fact]
    public void A_perplexity_window_past_the_context_extrapolates_as_the_caller_asked()
    {
        // The window is the caller's choice (llmctl perplexity --window): it is measured, not refused.
        var ids = PolicyFixtures.RandomIds(Context + 6, seed: 5);
        var result = PerplexityEvaluator.Evaluate(_model, ids, window: Context + 6);
        Assert.Equal(Context + 5, result.TokensScored);
        Assert.True(double.IsFinite(result.Perplexity));
    }

    [Theory]
    [InlineData("dense", Context - 1000)] // ends with finish reason length at the context
    [InlineData("window(64)", 40)] // a bounded policy has no context limit: max_tokens ends it
    public void Generation_stops_at_the_context_under_dense_only(string spec, int expectedTokens)
    {
        var prompt = PolicyFixtures.RandomIds(1000, seed: 2);
        var p = new SamplingParameters { Temperature = 0, MaxTokens = 40, IgnoreEos = true, Seed = 1 };
        var output = GenerationOutput.Collect(new TextGenerator(_model).Generate(prompt, p, policy: KvPolicyRegistry.Parse(spec))).Single();
        Assert.Equal(expectedTokens, output.Ids.Count);
        Assert.Equal(FinishReason.Length, output.Finish);
    }

    [Fact]
    public void A_turn_is_admitted_up_to_the_context_and_refused_past_it_before_any_token_runs()
    {
        var fed = PolicyFixtures.RandomIds(10, seed: 3);
        var logits = new float[_model.Config.VocabSize];
        using var cache = _model.CreateCache(16);
        cache.StartAt(Context - 20); // a history of Context - 20 tokens (its KV does not matter here)
        Assert.Throws<ContextExceededException>(() => ConversationTurn.Feed(_model, cache, fed, maxTokens: 11, logits));
        Assert.Equal(Context - 20, cache.TokensSeen);
        ConversationTurn.Feed(_model, cache, fed, maxTokens: 10, logits);
        Assert.Equal(Context - 10, cache.TokensSeen);

        using var bounded = _model.CreateCache(16, new SinkWindowPolicy(4, 12));
        bounded.StartAt(4 * Context);
        ConversationTurn.Feed(_model, bounded, fed, maxTokens: 1000, logits);
        Assert.Equal(4 * Context + 10, bounded.TokensSeen);
    }
}
