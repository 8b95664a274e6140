using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Through the cluster, the same prompt, parameters and seed stream exactly the tokens of
/// `llmctl generate --local` (the in-process TextGenerator), for every policy.</summary>
public sealed class ClusterEquivalenceTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    // About 70 tokens: longer than the 24-token budgets below, so the cache manager compresses on ingest.
    private const string LongPrompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
                                      "One day, she saw a big red ball near the tree and";

    public static TheoryData<string, float> Cases()
    {
        var data = new TheoryData<string, float>();
        foreach (var policy in new[] { "dense", "window(24)", "sink_window(4,20)", "knorm(24,8)", "qfilters(24,8)" })
        {
            data.Add(policy, 0f);   // greedy
            data.Add(policy, 0.8f); // seeded sampling
        }
        return data;
    }

    [SharedDataTheory]
    [MemberData(nameof(Cases))]
    public async Task Cluster_stream_equals_local_generation(string policy, float temperature)
    {
        var p = new SamplingParameters { Temperature = temperature, TopP = 0.95f, Seed = 1234, MaxTokens = 48 };
        var prompt = f.Tokenizer.Encode(LongPrompt, addBos: true);
        Assert.True(prompt.Length > 24, $"the prompt must exceed the budget ({prompt.Length} tokens)");
        var localPolicy = KvPolicyRegistry.Parse(policy, new PolicyOptions(f.Filters));
        var expected = GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt, p, policy: localPolicy)).Single();

        var got = await f.Cluster.GenerateAsync(new GenerateRequest
        {
            TokenIds = new TokenIds { Ids = { prompt } },
            Sampling = SamplingWire.FromEngine(p),
            KvPolicy = PolicyMapping.ToWire(policy),
        });
        Assert.Equal(expected.Ids, got.Ids);
        Assert.Equal(expected.Text, got.Text);
        Assert.Equal(SamplingMapping.ToWire(expected.Finish), got.Finish);
    }

    [SharedDataFact]
    public async Task Thirty_two_concurrent_streams_of_mixed_lengths_all_complete_correctly()
    {
        var rng = new Random(9);
        var requests = Enumerable.Range(0, 32).Select(i =>
        {
            var text = string.Join(' ', LongPrompt.Split(' ').Take(2 + rng.Next(20)));
            var p = new SamplingParameters { Temperature = i % 3 == 0 ? 0 : 0.7f, Seed = i, MaxTokens = 8 + rng.Next(60) };
            return (Prompt: f.Tokenizer.Encode(text, addBos: true), P: p);
        }).ToList();
        var expected = requests.Select(r => GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(r.Prompt, r.P)).Single()).ToList();

        var results = await Task.WhenAll(requests.Select(r => f.Cluster.GenerateAsync(new GenerateRequest
        {
            TokenIds = new TokenIds { Ids = { r.Prompt } },
            Sampling = SamplingWire.FromEngine(r.P),
        })));
        for (int i = 0; i < results.Length; i++)
        {
            Assert.Equal(expected[i].Ids, results[i].Ids);
            Assert.Equal(SamplingMapping.ToWire(expected[i].Finish), results[i].Finish);
            Assert.NotNull(results[i].Complete);
        }
        Assert.Equal(0, f.Cluster.DecodeService.Running);
    }
}
