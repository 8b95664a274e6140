using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>With weights converted at load (`--weights` on the prefill and decode workers), the cluster
/// streams exactly the tokens of an in-process run with the same format: both paths run the same
/// kernels (for q8_0, the repacked int8 GEMM at the prompt's row count and at decode's).</summary>
public sealed class WeightFormatClusterTests
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.";

    [SharedDataTheory]
    [InlineData("q8_0", "dense", 0f)]
    [InlineData("q8_0", "sink_window(4,20)", 0.8f)]
    [InlineData("bf16", "dense", 0.8f)]
    public async Task Cluster_stream_equals_the_local_run_in_the_same_format(string weights, string policy, float temperature)
    {
        string model = SharedData.Path_("models", "stories260K", "stories260K.bin");
        var format = WeightLayout.ParseOption(weights);
        using var local = ModelLoader.Load(model, weights: format);
        Assert.Equal(format, local.Weights.MatrixFormat);
        var tokenizer = ModelLoader.LoadTokenizer(model, local.Config);
        var p = new SamplingParameters { Temperature = temperature, TopP = 0.95f, Seed = 77, MaxTokens = 40 };
        var prompt = tokenizer.Encode(Prompt, addBos: true);
        var expected = GenerationOutput.Collect(new TextGenerator(local, tokenizer).Generate(prompt, p, policy: KvPolicyRegistry.Parse(policy, new PolicyOptions(null)))).Single();

        await using var cluster = await TestCluster.StartAsync(model, prefillOptions: ["--weights", weights], decodeOptions: ["--weights", weights]);
        var got = await cluster.GenerateAsync(new GenerateRequest
        {
            TokenIds = new TokenIds { Ids = { prompt } },
            Sampling = SamplingWire.FromEngine(p),
            KvPolicy = PolicyMapping.ToWire(policy),
        });
        Assert.Equal(expected.Ids, got.Ids);
        Assert.Equal(expected.Text, got.Text);
    }
}
