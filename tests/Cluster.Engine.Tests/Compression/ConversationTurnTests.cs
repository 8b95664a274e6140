using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>A later turn of a conversation: room made per policy before the turn's tokens arrive
/// (StreamingLLM's evict-for-space), and dense refusing past the context.</summary>
public sealed class ConversationTurnTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly Cluster.Engine.Model.LlamaModel _model;
    private readonly int[] _ids;

    public ConversationTurnTests()
    {
        var folder = _dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        _model = TestModels.Load(folder);
        var rng = new Random(4);
        _ids = Enumerable.Range(0, 40).Select(_ => rng.Next(3, 259)).ToArray();
    }

    public void Dispose()
    {
        _model.Dispose();
        _dir.Dispose();
    }

    [Theory]
    [InlineData(10, 4 + 20 - 10)] // room for 10: sinks + the newest 10
    [InlineData(100, 4)] // more than the budget: the sinks stay
    public void Sink_window_makes_room_keeping_the_sinks_and_the_newest(int space, int expectedKept)
    {
        var policy = new SinkWindowPolicy(4, 20);
        using var cache = _model.CreateCache(24, policy);
        PolicyFixtures.Stream(_model, _ids, cache);
        policy.MakeRoom(_model, cache, space);
        var positions = PolicyFixtures.HeadPositions(cache.Layers[0], 0);
        Assert.Equal(expectedKept, positions.Length);
        Assert.Equal([0, 1, 2, 3], positions[..4]);
        Assert.Equal(Enumerable.Range(_ids.Length - (expectedKept - 4), expectedKept - 4), positions[4..]);
    }

    [Fact]
    public void Dense_refuses_a_turn_past_the_context()
    {
        int context = _model.Config.MaxPositions;
        using var conversation = new Conversation(_model, new DensePolicy());
        var p = new SamplingParameters { Seed = 1, MaxTokens = 4, IgnoreEos = true };
        conversation.Turn(_ids[..8], p);
        Assert.Throws<ContextExceededException>(() => conversation.Turn(Enumerable.Repeat(5, context - 12).ToArray(), p));
    }

    [Fact]
    public void A_bounded_conversation_runs_far_past_the_context_within_its_budget()
    {
        using var conversation = new Conversation(_model, new SinkWindowPolicy(4, 28));
        var p = new SamplingParameters { Seed = 1, MaxTokens = 8, IgnoreEos = true };
        for (int t = 0; conversation.TokensSeen < 3 * _model.Config.MaxPositions; t++)
        {
            Assert.Equal(8, conversation.Turn(_ids[(t % 4 * 8)..(t % 4 * 8 + 8)], p with { Seed = t }).Count);
            Assert.True(conversation.Kept <= 32);
        }
    }
}
