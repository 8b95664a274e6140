using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Grpc.Core;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>The decode worker fetches a new request's KV while prefill runs (gateway --kv-prefetch, issue 17):
/// the Decode call then starts from it, and the tokens are the local run's, for a dense and a compressed
/// cache, greedy and seeded; off, every Decode call fetches for itself as before.</summary>
public sealed class KvPrefetchTests
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";
    private static string ModelPath => SharedData.Path_("models", "stories260K", "stories260K.bin");

    private static IReadOnlyList<int> Local(SamplingParameters p, string policy)
    {
        using var model = ModelLoader.Load(ModelPath);
        var tok = ModelLoader.LoadTokenizer(ModelPath, model.Config);
        return GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(Prompt, true), p, policy: KvPolicyRegistry.Parse(policy))).Single().Ids;
    }

    private static long Hits(TestCluster cluster) => cluster.Decodes.Sum(d => ((Cluster.Decode.DecodeService)d.Service).PrefetchHits);

    [SharedDataTheory]
    [InlineData("dense", 0f)]
    [InlineData("sink_window(4,20)", 0.8f)]
    public async Task Decode_starts_from_the_kv_it_fetched_while_prefill_ran_and_the_tokens_are_the_local_runs(string policy, float temperature)
    {
        var p = new SamplingParameters { Temperature = temperature, TopP = 0.95f, Seed = 77, MaxTokens = 40, IgnoreEos = true };
        var expected = Local(p, policy);
        await using var cluster = await TestCluster.StartAsync(ModelPath, policy, decodeWorkers: 2);
        for (int i = 0; i < 3; i++)
        {
            var got = await cluster.GenerateAsync(new GenerateRequest { Text = Prompt, Sampling = SamplingWire.FromEngine(p), KvPolicy = PolicyMapping.ToWire(policy) });
            Assert.Equal(expected, got.Ids);
            Assert.Equal(i + 1, Hits(cluster)); // every request's decode started from its prefetch
        }
        // Nothing left behind: every prefetch was claimed by its call.
        Assert.All(cluster.Decodes, d => Assert.Equal(0, ((Cluster.Decode.DecodeService)d.Service).Prefetches.Count));
    }

    [SharedDataFact]
    public async Task Without_prefetch_decode_fetches_for_itself_and_the_tokens_are_the_same()
    {
        var p = new SamplingParameters { Temperature = 0f, MaxTokens = 30, IgnoreEos = true };
        var expected = Local(p, "dense");
        await using var cluster = await TestCluster.StartAsync(ModelPath, gatewayOptions: ["--kv-prefetch", "false"]);
        var got = await cluster.GenerateAsync(new GenerateRequest { Text = Prompt, Sampling = SamplingWire.FromEngine(p), KvPolicy = PolicyMapping.ToWire("dense") });
        Assert.Equal(expected, got.Ids);
        Assert.Equal(0, Hits(cluster));
    }

    [SharedDataTheory]
    [InlineData("", 10, "session_id is required")]
    [InlineData("s", 0, "token_count must be between 1")]
    [InlineData("s", 1_000_000, "token_count must be between 1")]
    public async Task A_prefetch_with_bad_arguments_is_refused_with_a_reason(string session, int tokens, string reason)
    {
        await using var cluster = await TestCluster.StartAsync(ModelPath);
        using var channel = GrpcChannels.Create(cluster.Decodes[0].GrpcAddress);
        var e = await Assert.ThrowsAsync<RpcException>(async () =>
            await new LlmCluster.V1.Decode.DecodeClient(channel).PrefetchKvAsync(new PrefetchKvRequest { SessionId = session, TokenCount = tokens }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(reason, e.Status.Detail);
    }
}
