using Cluster.Engine.Compression;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>StreamingLLM against an independent float64 PyTorch implementation that keeps pre-RoPE keys
/// and recomputes attention with cache-index positions at every step (llama_ref.py sink-window).</summary>
public sealed class SinkWindowReferenceTests
{
    [SharedDataFact]
    public void Sink_window_logits_match_the_cache_position_reference_at_every_step()
    {
        if (!PyTorchReference.Available()) return;
        var ids = TestModels.TinyStoriesIds(160);
        using var model = TestModels.Load(TestModels.Stories260K);
        using var cache = model.CreateCache(8, new SinkWindowPolicy(4, 28));
        var ours = PolicyFixtures.Stream(model, ids, cache);
        var reference = PyTorchReference.SinkWindowLogits(TestModels.Stories260K, ids, 4, 28);
        Assert.InRange(TestModels.MaxAbsDiff(ours, reference), 0, 1e-4);
    }
}
