using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// Issue 17 end to end: a cluster whose workers write bf16 or fp16 KV streams the tokens of a local run
/// whose prompt KV was rounded to that precision once, after prefill (what the cluster does: prefill
/// computes in fp32 and sends rounded KV; decode widens it and goes on in fp32, its checkpoints being
/// copies), and the cache manager holds the session in that dtype.
/// </summary>
public sealed class KvPrecisionClusterTests
{
    [SharedDataTheory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public async Task A_16_bit_cluster_streams_the_local_run_with_rounded_prompt_kv(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        var path = SharedData.Path_("models", "stories260K", "stories260K.bin");
        using var model = ModelLoader.Load(path);
        var tokenizer = ModelLoader.LoadTokenizer(path, model.Config);
        var prompt = tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog.", addBos: true);
        const int maxTokens = 24;

        // Local: prompt in fp32, first token from its logits, then the prompt's KV rounded, then greedy steps.
        var expected = new List<int>();
        using (var cache = model.CreateCache(prompt.Length + maxTokens))
        {
            var logits = new float[model.Config.VocabSize];
            KvRoom.Forward(model, prompt, cache, logits);
            for (int l = 0; l < model.Config.Layers; l++)
            {
                var b = KvCacheSnapshot.Capture(model.Backend, cache, l);
                KvConvert.Round(b.Keys, p);
                KvConvert.Round(b.Values, p);
                KvCacheSnapshot.Restore(model.Backend, cache, b);
            }
            for (int i = 0; i < maxTokens; i++)
            {
                int next = ArgMax(logits);
                expected.Add(next);
                KvRoom.Forward(model, [next], cache, logits);
            }
        }

        await using var cluster = await TestCluster.StartAsync(path, checkpointEvery: 8,
            prefillOptions: ["--kv-dtype", dtype], decodeOptions: ["--kv-dtype", dtype]);
        var sampling = new SamplingParameters { Temperature = 0, MaxTokens = maxTokens, IgnoreEos = true, Seed = 1 };
        var got = await cluster.GenerateAsync(new GenerateRequest { TokenIds = new TokenIds { Ids = { prompt } }, Sampling = SamplingWire.FromEngine(sampling) });
        Assert.Equal(expected, got.Ids);

        // The session's KV, as the cache manager holds it, is in the workers' dtype.
        using var channel = Cluster.Serving.Routing.GrpcChannels.Create(cluster.CacheManager.GrpcAddress);
        var checkpoint = await new LlmCluster.V1.CacheManager.CacheManagerClient(channel).GetCheckpointAsync(new GetCheckpointRequest { SessionId = got.SessionId });
        Assert.Equal(KvLayoutMapping.ToWire(p), checkpoint.Kv.Layout.Dtype);   // decode's checkpoint
        var (first, _, bytes) = await Cluster.Serving.Kv.KvTransfer.GetAsync(channel, got.SessionId, 1, CancellationToken.None);
        Assert.Equal(KvLayoutMapping.ToWire(p), first.Layout.Dtype);             // prefill's put
        var c = model.Config;
        Assert.Equal((long)c.Layers * c.KvHeads * prompt.Length * c.HeadDim * 2 * 2, bytes);   // K and V, 2 bytes an element
    }

    private static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
