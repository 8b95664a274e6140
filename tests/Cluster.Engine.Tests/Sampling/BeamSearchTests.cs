using Cluster.Engine.Generation;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Beam search against brute force on a model whose every continuation can be listed.</summary>
public sealed class BeamSearchTests
{
    private const int Eos = 2, Length = 3;
    private static readonly int[] Prompt = [1];

    /// <summary>Every output of at most 3 tokens (vocabulary 8), scored, best first.</summary>
    private static List<(int[] Ids, double Score)> Enumerate(LlamaModel model, double lengthPenalty) =>
        BeamEnumeration.Enumerate(model, Prompt, Length, lengthPenalty, [Eos]);

    private static double SumLogprobs(LlamaModel model, List<int> output) => BeamEnumeration.SumLogprobs(model, Prompt, output);

    [Theory]
    [InlineData(1.0)]
    [InlineData(0.0)]
    [InlineData(2.0)]
    [InlineData(-0.5)]
    public void Wide_enough_beams_return_the_best_scoring_continuations(double lengthPenalty)
    {
        using var model = SamplingModels.Vocab8();
        var expected = Enumerate(model, lengthPenalty);
        // 64 = 8^2 beams keep every live prefix, so beam search is exact here.
        var p = new SamplingParameters { NumBeams = 64, N = 3, MaxTokens = Length, LengthPenalty = (float)lengthPenalty };
        var outputs = GenerationOutput.Collect(new TextGenerator(model).Generate(Prompt, p));

        Assert.Equal(3, outputs.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(expected[i].Score, outputs[i].Score!.Value, 4);
            if (expected[i].Score - expected[i + 1].Score > 1e-4) // distinct scores: the tokens are determined
                Assert.Equal(expected[i].Ids, outputs[i].Ids);
            Assert.Equal(outputs[i].Ids[^1] == Eos ? FinishReason.Eos : FinishReason.Length, outputs[i].Finish);
        }
        Assert.True(expected[0].Score - expected[1].Score > 1e-4, "the test model should have a unique best continuation");
    }

    [Fact]
    public void Narrow_beams_return_a_valid_output_whose_score_is_its_own()
    {
        using var model = SamplingModels.Vocab8();
        foreach (bool early in new[] { true, false })
        {
            var p = new SamplingParameters { NumBeams = 2, MaxTokens = Length, EarlyStopping = early };
            var o = GenerationOutput.Collect(new TextGenerator(model).Generate(Prompt, p)).Single();
            Assert.Equal(SumLogprobs(model, [.. o.Ids]) / o.Ids.Count, o.Score!.Value, 4);
            Assert.True(o.Score <= Enumerate(model, 1.0)[0].Score + 1e-6);
        }
    }

    [Fact]
    public void Beam_search_with_ignore_eos_runs_to_max_tokens()
    {
        using var model = SamplingModels.Vocab8();
        var p = new SamplingParameters { NumBeams = 4, N = 4, MaxTokens = 5, IgnoreEos = true };
        var outputs = GenerationOutput.Collect(new TextGenerator(model).Generate(Prompt, p));
        Assert.All(outputs, o => Assert.Equal(5, o.Ids.Count));
        Assert.All(outputs, o => Assert.Equal(FinishReason.Length, o.Finish));
        Assert.Equal(outputs.Select(o => o.Score), outputs.Select(o => o.Score).OrderDescending());
    }
}
