using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Cluster.Tests;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// The cache manager is a cache (DESIGN.md): a decode worker asked to continue a session whose KV the
/// cache manager lost (NOT_FOUND) or cannot serve (UNAVAILABLE) rebuilds the KV from the prompt and
/// streams exactly the tokens of the uninterrupted local run.
/// </summary>
public sealed class KvRebuildTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";

    [SharedDataTheory]
    [InlineData("dense", 0f)]
    [InlineData("sink_window(4,20)", 0.8f)]
    [InlineData("qfilters(24,8)", 0.8f)]
    [InlineData("window(16)", 0f)]
    public async Task Decode_rebuilds_the_kv_of_a_session_the_cache_manager_lost(string policy, float temperature)
    {
        var (prompt, p, expected) = LocalRun(policy, temperature);
        long rebuilds = f.Cluster.DecodeService.KvRebuilds;
        var got = await DecodeDirectlyAsync(f.Cluster, "lost-" + Guid.NewGuid().ToString("N"), prompt, p, policy, expected[0]);
        Assert.Equal(expected[1..], got);
        Assert.Equal(rebuilds + 1, f.Cluster.DecodeService.KvRebuilds);
    }

    [SharedDataFact]
    public async Task Decode_streams_on_when_the_cache_manager_is_down()
    {
        const string policy = "sink_window(4,20)";
        var (prompt, p, expected) = LocalRun(policy, 0.7f);
        await using var cluster = await TestCluster.StartAsync(f.ModelPath, policy);
        await cluster.CacheManager.DisposeAsync();
        // Checkpoints fail too (logged, retried never): the stream does not depend on them.
        var got = await DecodeDirectlyAsync(cluster, "down-" + Guid.NewGuid().ToString("N"), prompt, p, policy, expected[0]);
        Assert.Equal(expected[1..], got);
    }

    /// <summary>Found by `llmctl bench chaos`: with the cache manager down, prefill still answers (its KV
    /// is not stored, and the decode worker rebuilds it) instead of failing the request and leaving the
    /// gateway's rotation; the whole request streams the local tokens.</summary>
    [SharedDataFact]
    public async Task A_request_streams_its_local_tokens_while_the_cache_manager_is_down()
    {
        const string policy = "sink_window(4,20)";
        var (prompt, p, expected) = LocalRun(policy, 0.7f);
        await using var cluster = await TestCluster.StartAsync(f.ModelPath, policy);
        await cluster.CacheManager.DisposeAsync();
        var got = await cluster.GenerateAsync(new GenerateRequest
        {
            TokenIds = new TokenIds { Ids = { prompt } },
            Sampling = SamplingWire.FromEngine(p),
            KvPolicy = PolicyMapping.ToWire(policy),
        }, new Grpc.Core.CallOptions(deadline: DateTime.UtcNow.AddMinutes(2)));
        Assert.Equal(expected, got.Ids);
        Assert.Equal(1, cluster.DecodeService.KvRebuilds);
    }

    /// <summary>A rebuild runs forward passes on the decode worker's model, whose run state the batch
    /// shares: it must run on the batch thread between steps. Rebuilds of long prompts started while
    /// other sequences stream (each call here rebuilds, then streams while the next ones rebuild) leave
    /// every stream with its local tokens.</summary>
    [SharedDataFact]
    public async Task Rebuilds_beside_running_streams_leave_every_stream_its_local_tokens()
    {
        string[] policies = ["dense", "sink_window(4,20)", "window(16)", "dense", "qfilters(24,8)", "dense"];
        var runs = policies.Select((policy, i) => (policy, run: LocalRun(policy, i % 2 == 0 ? 0.8f : 0f, maxTokens: 120, repeat: 4, seed: 100 + i))).ToList();
        long rebuilds = f.Cluster.DecodeService.KvRebuilds;
        var calls = runs.Select(async (r, i) =>
        {
            await Task.Delay(150 * i);
            return await DecodeDirectlyAsync(f.Cluster, $"beside-{i}-" + Guid.NewGuid().ToString("N"), r.run.Prompt, r.run.P, r.policy, r.run.Expected[0]);
        }).ToList();
        var got = await Task.WhenAll(calls);
        for (int i = 0; i < runs.Count; i++)
            Assert.True(runs[i].run.Expected[1..].SequenceEqual(got[i]), $"stream {i} ({runs[i].policy}) differs from its local run");
        Assert.Equal(rebuilds + runs.Count, f.Cluster.DecodeService.KvRebuilds);
    }

    private (int[] Prompt, SamplingParameters P, List<int> Expected) LocalRun(string policy, float temperature, int maxTokens = 40, int repeat = 1, int seed = 77)
    {
        var p = new SamplingParameters { Temperature = temperature, Seed = seed, MaxTokens = maxTokens, IgnoreEos = repeat > 1 }.WithResolvedSeed();
        var prompt = f.Tokenizer.Encode(string.Join(" ", Enumerable.Repeat(Prompt, repeat)), addBos: true);
        var localPolicy = KvPolicyRegistry.Parse(policy, new PolicyOptions(f.Filters));
        var expected = GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt, p, policy: localPolicy)).Single().Ids;
        Assert.True(expected.Count > 10);
        return (prompt, p, [.. expected]);
    }

    /// <summary>What the gateway sends a decode worker after prefill's first token, for a session the
    /// cache manager does not hold.</summary>
    private static async Task<List<int>> DecodeDirectlyAsync(TestCluster cluster, string session, int[] prompt, SamplingParameters p, string policy, int first)
    {
        using var channel = GrpcChannels.Create(cluster.Decode.GrpcAddress);
        using var call = new LlmCluster.V1.Decode.DecodeClient(channel).Decode(new DecodeRequest
        {
            Kv = new KvHandle { SessionId = session, Policy = PolicyMapping.ToWire(policy) },
            Sampling = SamplingWire.FromEngine(p),
            PromptTokenIds = { prompt },
            GeneratedTokenIds = { first },
            CheckpointEvery = 8,
        }, deadline: DateTime.UtcNow.AddMinutes(2));
        var ids = new List<int>();
        await foreach (var r in call.ResponseStream.ReadAllAsync())
            if (r.ResponseCase == DecodeResponse.ResponseOneofCase.Chunk) ids.AddRange(r.Chunk.TokenIds);
        return ids;
    }
}
