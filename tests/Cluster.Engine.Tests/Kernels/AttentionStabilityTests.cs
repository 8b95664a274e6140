using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Xunit;

namespace Cluster.Engine.Tests.Kernels;

public sealed class AttentionStabilityTests
{
    [Fact]
    public void Attention_with_scores_far_past_exp_range_stays_finite_and_exact()
    {
        // Scores of 200 and 190 (exp overflows float past ~88): softmax must still give weights 1/(1+e^-10).
        const int hd = 4;
        using var backend = new CpuBackend(1);
        using var cache = new SequenceKvCache(backend, 1, 1, hd, 2, Cluster.Engine.Compression.DensePolicy.Default);
        var layer = cache.Layers[0];
        backend.CopyFromHost([200f, 0, 0, 0, 190f, 0, 0, 0], layer.K);
        backend.CopyFromHost([1f, 0, 0, 0, 0, 1f, 0, 0], layer.V);
        layer.Lengths[0] = 2;
        using var q = backend.Allocate(hd);
        using var output = backend.Allocate(hd);
        backend.CopyFromHost([2f, 0, 0, 0], q); // score = 2 * k0 / sqrt(4) = k0
        backend.Attention(q, output, [new AttentionSegment(layer, 0, 1)], heads: 1, headDim: hd);
        var o = new float[hd];
        backend.CopyToHost(output, 0, o);
        double w1 = 1 / (1 + Math.Exp(-10));
        Assert.Equal(w1, o[0], 1e-6);
        Assert.Equal(1 - w1, o[1], 1e-6);
    }
}
