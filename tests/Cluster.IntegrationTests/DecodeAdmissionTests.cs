using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>A decode worker's KV budget (--kv-memory) and queue (--max-queue) under more concurrent
/// streams than the budget holds: nobody fails or changes tokens while the queue has room, memory stays
/// within the budget, and beyond the queue's bound requests are refused with RESOURCE_EXHAUSTED while
/// the rest go on.</summary>
public sealed class DecodeAdmissionTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily.";

    // stories260K: 5 layers x 4 KV heads x head_dim 8 x K and V x 4 bytes = 1,280 bytes a token, so a
    // sequence of ~15 prompt tokens + 300 output reserves ~400 KiB and a 1 MiB budget holds two.
    private const int MaxTokens = 300;

    private List<(int[] Prompt, SamplingParameters P)> Requests(int count) =>
        Enumerable.Range(0, count).Select(i => (f.Tokenizer.Encode(Prompt, addBos: true),
            new SamplingParameters { Temperature = 0.8f, Seed = 100 + i, MaxTokens = MaxTokens, IgnoreEos = true })).ToList();

    private Task<Streamed> Generate(TestCluster cluster, (int[] Prompt, SamplingParameters P) r) =>
        cluster.GenerateAsync(new GenerateRequest { TokenIds = new TokenIds { Ids = { r.Prompt } }, Sampling = SamplingWire.FromEngine(r.P) });

    [SharedDataFact]
    public async Task More_streams_than_the_kv_budget_holds_all_finish_with_their_local_tokens_within_the_budget()
    {
        await using var cluster = await TestCluster.StartAsync(f.ModelPath, decodeOptions: ["--kv-memory", "1", "--max-queue", "64"]);
        var requests = Requests(12);
        var expected = requests.Select(r => GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(r.Prompt, r.P)).Single()).ToList();

        var results = await Task.WhenAll(requests.Select(r => Generate(cluster, r)));

        for (int i = 0; i < results.Length; i++) Assert.Equal(expected[i].Ids, results[i].Ids);
        var admission = cluster.DecodeService.Admission;
        long perSequence = (long)(requests[0].Prompt.Length + MaxTokens + 1) * 1280;
        Assert.True(admission.PeakBytes <= admission.BudgetBytes, $"peak {admission.PeakBytes} > budget {admission.BudgetBytes}");
        Assert.True(admission.PeakBytes >= 2 * perSequence, $"the budget holds two sequences at once; peak was {admission.PeakBytes}");
        Assert.True(admission.BudgetBytes < 3 * perSequence, "the test needs a budget smaller than three sequences");
        Assert.Equal(0, admission.Refused);
        Assert.Equal(0, admission.UsedBytes);
    }

    [SharedDataFact]
    public async Task Beyond_the_queue_bound_requests_are_refused_with_resource_exhausted_and_the_rest_finish()
    {
        await using var cluster = await TestCluster.StartAsync(f.ModelPath, decodeOptions: ["--kv-memory", "1", "--max-queue", "1"]);
        var requests = Requests(8);
        var expected = requests.Select(r => GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(r.Prompt, r.P)).Single()).ToList();

        var outcomes = await Task.WhenAll(requests.Select(async r =>
        {
            try { return ((Streamed?)await Generate(cluster, r), (RpcException?)null); }
            catch (RpcException e) { return (null, e); }
        }));

        var refused = outcomes.Where(o => o.Item2 is not null).Select(o => o.Item2!).ToList();
        Assert.NotEmpty(refused); // eight at once against room for two and a queue of one
        Assert.All(refused, e =>
        {
            Assert.Equal(StatusCode.ResourceExhausted, e.StatusCode);
            Assert.Contains("requests already wait", e.Status.Detail);
        });
        for (int i = 0; i < outcomes.Length; i++)
            if (outcomes[i].Item1 is { } done) Assert.Equal(expected[i].Ids, done.Ids);
        Assert.True(outcomes.Count(o => o.Item1 is not null) >= 3, "two admitted and one queued must finish");
        Assert.Equal(refused.Count, cluster.DecodeService.Admission.Refused);

        // Nothing else broke: the worker takes the next request.
        var again = await Generate(cluster, requests[0]);
        Assert.Equal(expected[0].Ids, again.Ids);
        Assert.Equal(0, cluster.DecodeService.Admission.UsedBytes);
    }
}
