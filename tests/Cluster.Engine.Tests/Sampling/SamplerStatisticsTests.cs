using Cluster.Engine.Sampling;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>The draws follow softmax(logits / T), and the filters keep exactly the right support.
/// Seeds are fixed, so these statistical tests are deterministic; thresholds are at p = 0.001.</summary>
public sealed class SamplerStatisticsTests
{
    private static readonly float[] Logits = [2.0f, 1.0f, 0.5f, 0f, -0.5f, -1.5f];
    private const int Draws = 20000;

    private static int[] Count(SamplingParameters p, float[] logits, long seed)
    {
        var chain = SamplerChain.Build(p, eosIds: []);
        var candidates = new TokenCandidates(logits.Length);
        var state = new SamplingState(logits.Length, [], seed);
        var counts = new int[logits.Length];
        for (int i = 0; i < Draws; i++)
        {
            int id = chain.Sample(logits, candidates, state);
            counts[id]++;
            state.Accept(id); // moves to the next step (no penalty is on, so history does not matter)
        }
        return counts;
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(1.0)]
    [InlineData(1.7)]
    [InlineData(3.0)]
    public void Frequencies_match_softmax_of_logits_over_T_and_reject_a_wrong_T(double t)
    {
        var counts = Count(new SamplingParameters { Temperature = (float)t }, Logits, seed: 42);
        double critical = ChiSquare.Critical001(Logits.Length - 1);

        double right = ChiSquare.Statistic(counts, ChiSquare.Softmax(Logits, t));
        Assert.True(right < critical, $"T={t}: chi-square {right:F2} >= {critical} against the right distribution");

        // The same statistic must be able to fail: a 25% different temperature is rejected.
        foreach (var wrong in new[] { t * 1.25, t / 1.25 })
        {
            double stat = ChiSquare.Statistic(counts, ChiSquare.Softmax(Logits, wrong));
            Assert.True(stat > critical, $"T={t}: chi-square {stat:F2} against T={wrong} should exceed {critical}");
        }
    }

    [Fact]
    public void A_sampler_that_ignores_temperature_would_fail_the_test()
    {
        var counts = Count(new SamplingParameters { Temperature = 1f }, Logits, seed: 42);
        double stat = ChiSquare.Statistic(counts, ChiSquare.Softmax(Logits, 0.5));
        Assert.True(stat > ChiSquare.Critical001(Logits.Length - 1), $"chi-square {stat:F2}");
    }

    // Probabilities 0.4, 0.3, 0.2, 0.1, 0.0 (ln 0.0001) given to the ids in shuffled order.
    private static readonly int[] Order = [3, 0, 4, 1, 2];
    private static readonly double[] Probs = [0.4, 0.3, 0.2, 0.1, 0.0001];

    private static float[] ShuffledLogits()
    {
        var logits = new float[Order.Length];
        for (int rank = 0; rank < Order.Length; rank++) logits[Order[rank]] = (float)Math.Log(Probs[rank]);
        return logits;
    }

    private static int[] Support(ISampler filter, float[] logits, float temperature = 1f)
    {
        var candidates = new TokenCandidates(logits.Length);
        candidates.Reset(logits);
        new SamplerChain([new TemperatureSampler(temperature), filter]).Apply(candidates, new SamplingState(logits.Length, [], 0));
        return [.. candidates.IdSpan.ToArray().Order()];
    }

    private static int[] TopRanks(int n) => [.. Order.Take(n).Order()];

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(4, 4)]
    [InlineData(9, 5)]
    public void Top_k_keeps_the_k_most_likely(int k, int kept) =>
        Assert.Equal(TopRanks(kept), Support(new TopKSampler(k), ShuffledLogits()));

    [Theory]
    [InlineData(0.3f, 1)]   // 0.4 alone reaches 0.3
    [InlineData(0.65f, 2)]  // 0.4 + 0.3 = 0.7
    [InlineData(0.75f, 3)]  // 0.9
    [InlineData(0.95f, 4)]  // 1.0 - 0.0001
    [InlineData(1f, 5)]     // off
    public void Top_p_keeps_the_smallest_set_reaching_p(float p, int kept) =>
        Assert.Equal(TopRanks(kept), Support(new TopPSampler(p), ShuffledLogits()));

    [Fact]
    public void Top_p_works_on_the_probabilities_after_temperature()
    {
        // At T = 2 the probabilities are proportional to sqrt(0.4, 0.3, 0.2, 0.1, 0.0001).
        var sq = Probs.Select(Math.Sqrt).ToArray();
        double total = sq.Sum();
        double firstTwo = (sq[0] + sq[1]) / total; // about 0.604 (0.7 at T = 1): p = 0.58 keeps two, p = 0.7 three
        Assert.InRange(firstTwo, 0.59, 0.62);
        Assert.Equal(TopRanks(2), Support(new TopPSampler(0.58f), ShuffledLogits(), temperature: 2f));
        Assert.Equal(TopRanks(3), Support(new TopPSampler(0.7f), ShuffledLogits(), temperature: 2f));
    }

    [Theory]
    [InlineData(0.9f, 1)]  // threshold 0.36
    [InlineData(0.6f, 2)]  // threshold 0.24
    [InlineData(0.4f, 3)]  // threshold 0.16
    [InlineData(0.2f, 4)]  // threshold 0.08
    [InlineData(0.0001f, 5)]
    public void Min_p_keeps_tokens_at_least_min_p_times_the_top_probability(float minP, int kept) =>
        Assert.Equal(TopRanks(kept), Support(new MinPSampler(minP), ShuffledLogits()));

    [Theory]
    [InlineData(3, 1f, 0f)]
    [InlineData(0, 0.75f, 0f)]
    [InlineData(0, 1f, 0.45f)]
    public void Filtered_draws_stay_on_the_support_and_follow_the_renormalised_softmax(int topK, float topP, float minP)
    {
        var logits = ShuffledLogits();
        var counts = Count(new SamplingParameters { Temperature = 1f, TopK = topK, TopP = topP, MinP = minP }, logits, seed: 7);
        var support = TopRanks(3);
        for (int id = 0; id < logits.Length; id++)
            if (!support.Contains(id)) Assert.Equal(0, counts[id]);
        var kept = support.Select(id => logits[id]).ToArray();
        double stat = ChiSquare.Statistic(support.Select(id => counts[id]).ToArray(), ChiSquare.Softmax(kept, 1.0));
        Assert.True(stat < ChiSquare.Critical001(support.Length - 1), $"chi-square {stat:F2}");
    }

    [Fact]
    public void Temperature_zero_is_argmax_and_lowest_id_wins_ties()
    {
        var chain = SamplerChain.Build(new SamplingParameters { Temperature = 0 }, []);
        var candidates = new TokenCandidates(4);
        var state = new SamplingState(4, [], 0);
        Assert.Equal(2, chain.Sample([0f, 1f, 3f, 2f], candidates, state));
        Assert.Equal(1, chain.Sample([0f, 3f, 3f, 2f], candidates, state));
        Assert.Equal("greedy", chain.Name); // filters and temperature cannot change argmax, so they are left out
    }
}
