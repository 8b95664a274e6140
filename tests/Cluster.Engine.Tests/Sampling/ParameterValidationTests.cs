using Cluster.Engine.Sampling;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Every bad value is refused with a message that names its parameter.</summary>
public sealed class ParameterValidationTests
{
    public static TheoryData<string, SamplingParameters> Invalid => new()
    {
        { "temperature", new() { Temperature = -0.1f } },
        { "temperature", new() { Temperature = float.NaN } },
        { "top_k", new() { TopK = -1 } },
        { "top_p", new() { TopP = 0f } },
        { "top_p", new() { TopP = 1.01f } },
        { "min_p", new() { MinP = 1.5f } },
        { "presence_penalty", new() { PresencePenalty = 2.5f } },
        { "frequency_penalty", new() { FrequencyPenalty = -3f } },
        { "repetition_penalty", new() { RepetitionPenalty = 0f } },
        { "logit_bias", new() { LogitBias = new Dictionary<int, float> { [100] = 1f } } },  // id outside the vocabulary
        { "logit_bias", new() { LogitBias = new Dictionary<int, float> { [3] = 101f } } },  // beyond OpenAI's range
        { "max_tokens", new() { MaxTokens = 0 } },
        { "min_tokens", new() { MinTokens = 20, MaxTokens = 10 } },
        { "stop", new() { Stop = [""] } },
        { "stop_token_ids", new() { StopTokenIds = [-1] } },
        { "logprobs", new() { Logprobs = 21 } },
        { "n", new() { N = 0 } },
        { "num_beams", new() { NumBeams = 0 } },
        { "n", new() { NumBeams = 2, N = 3 } },                                           // more outputs than beams
        { "n", new() { N = int.MaxValue } },                                              // one request must not exhaust a worker
        { "num_beams", new() { NumBeams = SamplingParameters.MaxOutputs + 1 } },
        { "best_of", new() { N = 3, BestOf = 2 } },                                       // fewer samples than outputs
        { "best_of", new() { N = 2, BestOf = SamplingParameters.MaxOutputs + 1 } },
        { "best_of", new() { NumBeams = 4, N = 2, BestOf = 4 } },                         // the width is num_beams
        { "stop", new() { NumBeams = 2, Stop = ["."] } },                                 // beams keep no text to match
        { "length_penalty", new() { LengthPenalty = float.PositiveInfinity } },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void Bad_values_are_refused_naming_the_parameter(string parameter, SamplingParameters p)
    {
        var e = Assert.Throws<ArgumentException>(() => p.Validate(vocabSize: 50));
        Assert.StartsWith(parameter + " ", e.Message);
    }

    [Fact]
    public void Defaults_and_edge_values_are_accepted()
    {
        new SamplingParameters().Validate(50);
        new SamplingParameters { Temperature = 0, TopK = 50, TopP = 1, MinP = 1, PresencePenalty = -2, FrequencyPenalty = 2, Logprobs = 20, MinTokens = 16 }.Validate(50);
        new SamplingParameters { N = SamplingParameters.MaxOutputs, BestOf = SamplingParameters.MaxOutputs }.Validate(50);
        new SamplingParameters { NumBeams = 4, N = 4, BestOf = 4 }.Validate(50); // best_of = n changes nothing
    }

    [Fact]
    public void The_caller_chooses_how_parameters_are_spelled()
    {
        var e = Assert.Throws<ArgumentException>(() => new SamplingParameters { TopP = 2 }.Validate(50, n => "--" + n.Replace('_', '-')));
        Assert.Equal("--top-p must be in (0, 1], got 2", e.Message);
    }
}
