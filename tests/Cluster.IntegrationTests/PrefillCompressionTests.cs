using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Issue 17: the prefill worker compresses a prompt's KV to the session's policy before it
/// sends, so a bounded policy's KV travels at its budget, not at the prompt's length, and the stream
/// is the local run's token for token.</summary>
public sealed class PrefillCompressionTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    // stories260K: 5 layers x 4 KV heads x head_dim 8 x (K, V) x 4 bytes.
    private const int BytesPerToken = 5 * 4 * 8 * 2 * 4;

    [SharedDataTheory]
    [InlineData("sink_window(4,60)")]
    [InlineData("window(64)")]
    [InlineData("qfilters(64,8)")]
    public async Task A_400_token_prompt_sends_only_the_kept_tokens_and_streams_the_local_tokens(string policy)
    {
        var text = string.Concat(Enumerable.Repeat("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ", 20));
        var prompt = f.Tokenizer.Encode(text, addBos: true)[..400];
        var p = new SamplingParameters { Temperature = 0.8f, Seed = 11, MaxTokens = 24, IgnoreEos = true };
        var local = KvPolicyRegistry.Parse(policy, new PolicyOptions(f.Filters));
        var expected = GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt, p, policy: local)).Single();
        var prefill = (Cluster.Prefill.PrefillService)f.Cluster.Prefill.Service;
        long before = prefill.KvBytesPut;

        var got = await f.Cluster.GenerateAsync(new GenerateRequest
        {
            TokenIds = new TokenIds { Ids = { prompt } },
            Sampling = SamplingWire.FromEngine(p),
            KvPolicy = PolicyMapping.ToWire(policy),
        });

        Assert.Equal(expected.Ids, got.Ids);
        // Prefill counts its bytes once the put's response is back, which may be after the stream ended
        // (the put runs after the first token; the decode worker only waited for it to land).
        for (var deadline = DateTime.UtcNow.AddSeconds(10); prefill.KvBytesPut == before && DateTime.UtcNow < deadline;) await Task.Delay(10);
        long sent = prefill.KvBytesPut - before;
        Assert.InRange(sent, 1, 64L * BytesPerToken); // the budget's 64 tokens, not the prompt's 400 (512,000 bytes dense)
    }
}

/// <summary>Issue 17, layer-wise streaming: a prompt's KV put layer by layer while the prefill runs (each
/// layer compressed as soon as the pass is done with it) is stored bit for bit as the put after the pass
/// (--layer-streaming false, and by default a prompt shorter than --layer-streaming-min-tokens), for
/// prompts of one and of two chunks, dense and bounded, and the first token is the same.</summary>
public sealed class LayerStreamingTests
{
    [SharedDataTheory]
    [InlineData("dense", 120)]
    [InlineData("sink_window(4,60)", 120)]
    [InlineData("sink_window(4,60)", 400)]
    [InlineData("window(64)", 400)]
    [InlineData("knorm(64,16)", 300)]
    public async Task The_streamed_put_stores_what_the_put_after_the_pass_stores(string policy, int tokens)
    {
        var model = SharedData.Path_("models", "stories260K", "stories260K.bin");
        await using var cm = await Cluster.Serving.Hosting.ServiceHost.StartAsync(TestCluster.Options(Cluster.Serving.Hosting.ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        var cmAddress = cm.GrpcAddress.ToString();
        async Task<(PrefillResponse, List<Cluster.Engine.KvCache.KvLayerBlock>)> Prefill(string session, bool streams, params string[] options)
        {
            await using var prefill = await Cluster.Serving.Hosting.ServiceHost.StartAsync(TestCluster.Options(Cluster.Serving.Hosting.ServiceRole.Prefill,
                ["--model", model, "--cache-manager", cmAddress, .. options]), Cluster.Prefill.PrefillService.CreateAsync);
            using var channel = Cluster.Serving.Routing.GrpcChannels.Create(prefill.GrpcAddress);
            var ids = Enumerable.Range(0, tokens).Select(i => 1 + (i * 37 + 11) % 500).ToArray();
            var response = await new LlmCluster.V1.Prefill.PrefillClient(channel).PrefillAsync(new PrefillRequest
            {
                SessionId = session,
                PromptTokenIds = { ids },
                Sampling = new SamplingParams { Temperature = 0.8f, Seed = 3, MaxTokens = 8 },
                KvPolicy = PolicyMapping.ToWire(policy),
            });
            using var cmChannel = Cluster.Serving.Routing.GrpcChannels.Create(cm.GrpcAddress);
            var (_, blocks, _) = await Cluster.Serving.Kv.KvTransfer.GetAsync(cmChannel, session, 0, CancellationToken.None); // waits for the announced put
            Assert.Equal(streams ? 1 : 0, ((Cluster.Prefill.PrefillService)prefill.Service).LayerStreamedPuts);
            return (response, blocks);
        }

        var (afterResponse, after) = await Prefill("after-the-pass", false, "--layer-streaming", "false");
        var (streamedResponse, streamed) = await Prefill("streamed", true, "--layer-streaming-min-tokens", "0");
        // By default a prompt this short (under 1,024 tokens) goes after the pass too.
        var (shortResponse, byDefault) = await Prefill("short-by-default", false);
        Assert.Equal(afterResponse.Outputs.Single().TokenId, shortResponse.Outputs.Single().TokenId);
        Assert.Equal(after.Select(b => b.Keys), byDefault.Select(b => b.Keys));
        Assert.Equal(after.Select(b => b.Values), byDefault.Select(b => b.Values));

        Assert.Equal(afterResponse.Outputs.Single().TokenId, streamedResponse.Outputs.Single().TokenId);
        Assert.Equal(afterResponse.Kv.TokenCount, streamedResponse.Kv.TokenCount);
        Assert.Equal(after.Count, streamed.Count);
        for (int l = 0; l < after.Count; l++)
        {
            Assert.Equal(after[l].Layer, streamed[l].Layer);
            Assert.Equal(after[l].Positions, streamed[l].Positions);
            Assert.Equal(after[l].Keys, streamed[l].Keys);
            Assert.Equal(after[l].Values, streamed[l].Values);
        }
        if (policy != "dense") Assert.All(after, b => Assert.All(b.Positions, p => Assert.Equal(64, p.Length)));
    }
}
