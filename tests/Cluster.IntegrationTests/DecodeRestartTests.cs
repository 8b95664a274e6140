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
/// A decode worker can die after streaming an output's last token but before its completion: the
/// gateway then restarts the output elsewhere with every token already generated. The new worker must
/// complete it as it ended, not sample one more (a restarted n=2 stream once ended with 601 of 600 tokens).
/// </summary>
public sealed class DecodeRestartTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    [SharedDataTheory]
    [InlineData(false)] // ended by max_tokens
    [InlineData(true)]  // ended by a stop token id: the output's last token
    public async Task A_restart_with_every_token_already_streamed_completes_without_another(bool stopToken)
    {
        var prompt = f.Tokenizer.Encode("Once upon a time, there was a little girl named Lily.", addBos: true);
        var p = new SamplingParameters { Temperature = 0.8f, Seed = 9, MaxTokens = 12, IgnoreEos = true };
        var all = GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt, p)).Single().Ids;
        if (stopToken) p = p with { MaxTokens = 100, StopTokenIds = [all[7]] };
        var expected = GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt, p)).Single();
        var sampling = SamplingWire.FromEngine(p);
        using var prefillChannel = GrpcChannels.Create(f.Cluster.Prefill.GrpcAddress);
        var prefilled = await new LlmCluster.V1.Prefill.PrefillClient(prefillChannel).PrefillAsync(new PrefillRequest
        {
            SessionId = $"restart-done-{stopToken}",
            PromptTokenIds = { prompt },
            Sampling = sampling,
            KvPolicy = PolicyMapping.ToWire("dense"),
        });
        Assert.Equal(expected.Ids[0], prefilled.Outputs.Single().TokenId);

        using var decodeChannel = GrpcChannels.Create(f.Cluster.Decode.GrpcAddress);
        using var call = new LlmCluster.V1.Decode.DecodeClient(decodeChannel).Decode(new DecodeRequest
        {
            Kv = prefilled.Kv,
            Sampling = sampling,
            PromptTokenIds = { prompt },
            GeneratedTokenIds = { expected.Ids },
        });
        var tokens = new List<int>();
        DecodeComplete? complete = null;
        await foreach (var r in call.ResponseStream.ReadAllAsync())
        {
            if (r.Chunk is { } c) tokens.AddRange(c.TokenIds);
            if (r.Complete is { } done) complete = done;
        }
        Assert.Empty(tokens);
        Assert.NotNull(complete);
        Assert.Equal(SamplingMapping.ToWire(expected.Finish), complete.FinishReason);
    }
}
