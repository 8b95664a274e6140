using Cluster.Engine.Sampling;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Each logit processor against logits worked out by hand from its published formula.</summary>
public sealed class PenaltyTests
{
    // Prompt [0, 1]; generated so far [1, 1, 2]: token 1 twice, token 2 once, token 0 only in the prompt.
    private static readonly float[] Raw = [1f, -1f, 2f, 0.5f, -2f];

    private static SamplingState History()
    {
        var state = new SamplingState(Raw.Length, [0, 1], seed: 0);
        foreach (var id in new[] { 1, 1, 2 }) state.Accept(id);
        return state;
    }

    private static float[] Apply(params ISampler[] samplers)
    {
        var c = new TokenCandidates(Raw.Length);
        c.Reset(Raw);
        new SamplerChain(samplers).Apply(c, History());
        return c.LogitSpan.ToArray();
    }

    [Fact]
    public void Presence_and_frequency_follow_the_OpenAI_formula_over_generated_tokens()
    {
        // logit[j] -= count[j] * 0.25 + (count[j] > 0) * 0.5
        Assert.Equal([1f, -1f - (2 * 0.25f + 0.5f), 2f - (1 * 0.25f + 0.5f), 0.5f, -2f], Apply(new PresenceFrequencyPenaltySampler(0.5f, 0.25f)));
    }

    [Fact]
    public void Negative_presence_and_frequency_encourage_repeats()
    {
        Assert.Equal([1f, -1f + (2 * 1f + 0.5f), 2f + (1f + 0.5f), 0.5f, -2f], Apply(new PresenceFrequencyPenaltySampler(-0.5f, -1f)));
    }

    [Fact]
    public void Repetition_penalty_divides_positive_and_multiplies_negative_logits_of_prompt_and_output_tokens()
    {
        // Seen: 0 (prompt), 1 (both), 2 (output); 3 and 4 untouched.
        Assert.Equal([1f / 2, -1f * 2, 2f / 2, 0.5f, -2f], Apply(new RepetitionPenaltySampler(2f)));
        // A penalty below 1 rewards repeats the same way round.
        Assert.Equal([1f / 0.5f, -1f * 0.5f, 2f / 0.5f, 0.5f, -2f], Apply(new RepetitionPenaltySampler(0.5f)));
    }

    [Fact]
    public void Logit_bias_adds_to_raw_logits()
    {
        Assert.Equal([1f, -1f, 2f, 5.5f, -102f], Apply(new LogitBiasSampler(new Dictionary<int, float> { [3] = 5f, [4] = -100f })));
    }

    [Fact]
    public void Min_tokens_bans_ending_tokens_only_before_the_minimum()
    {
        Assert.Equal([1f, -1f, float.NegativeInfinity, 0.5f, float.NegativeInfinity], Apply(new MinTokensSampler(4, [2, 4])));
        Assert.Equal(Raw, Apply(new MinTokensSampler(3, [2, 4]))); // 3 generated already
    }

    [Fact]
    public void Build_applies_penalties_and_bias_on_raw_logits_before_temperature()
    {
        var p = new SamplingParameters
        {
            Temperature = 2f, RepetitionPenalty = 2f, PresencePenalty = 0.5f, FrequencyPenalty = 0.25f,
            LogitBias = new Dictionary<int, float> { [3] = 1f }, TopK = 5,
        };
        var chain = SamplerChain.Build(p, [2]);
        var c = new TokenCandidates(Raw.Length);
        c.Reset(Raw);
        var withoutPick = new SamplerChain(chain.Samplers.Take(chain.Samplers.Count - 1).ToList());
        withoutPick.Apply(c, History());
        // repetition: [0.5, -2, 1, 0.5, -2]; presence/frequency: [0.5, -3, 0.25, 0.5, -2]; bias: [.., 1.5, ..]; then / 2.
        var byId = new float[Raw.Length];
        for (int i = 0; i < c.Count; i++) byId[c.Ids[i]] = c.Logits[i];
        Assert.Equal([0.25f, -1.5f, 0.125f, 0.75f, -1f], byId);
        Assert.Equal(["repetition_penalty(2)", "penalties(presence=0.5, frequency=0.25)", "logit_bias(1 tokens)", "temperature(2)", "top_k(5)", "dist"],
            chain.Samplers.Select(s => s.Name));
    }

    [Fact]
    public void Greedy_chain_keeps_only_processors_that_can_change_argmax()
    {
        var chain = SamplerChain.Build(new SamplingParameters { Temperature = 0, TopP = 0.5f, MinP = 0.1f, TopK = 3, RepetitionPenalty = 1.3f }, [2]);
        Assert.Equal(["repetition_penalty(1.3)", "greedy"], chain.Samplers.Select(s => s.Name));
        var c = new TokenCandidates(Raw.Length);
        // Token 2 (2.0) is penalised to 2/1.3 = 1.54 and still wins; with penalty 5 it drops below token 3.
        Assert.Equal(2, chain.Sample(Raw, c, History()));
        var harsh = SamplerChain.Build(new SamplingParameters { Temperature = 0, RepetitionPenalty = 5f }, [2]);
        Assert.Equal(3, harsh.Sample(Raw, c, History())); // 2 -> 0.4, 0 -> 0.2, 3 stays 0.5
    }
}
