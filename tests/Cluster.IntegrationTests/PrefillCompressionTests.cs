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
