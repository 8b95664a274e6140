using Cluster.Engine.Compression;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Tests.Model;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>Q-Filters calibration (Godey et al. 2025) on synthetic queries with a planted direction.</summary>
public sealed class CalibrationTests
{
    private const int HeadDim = 16, Rows = 600;

    /// <summary>Queries a·d + noise with |a| ~ 4 and a positive for <paramref name="positiveShare"/> of the rows.</summary>
    private static (float[] Queries, float[] Direction) Planted(double positiveShare, int seed)
    {
        var rng = new Random(seed);
        var d = Normalize(Enumerable.Range(0, HeadDim).Select(_ => (float)Gaussian(rng)).ToArray());
        var q = new float[Rows * HeadDim];
        for (int r = 0; r < Rows; r++)
        {
            double a = (4 + Gaussian(rng) * 0.5) * (rng.NextDouble() < positiveShare ? 1 : -1);
            for (int i = 0; i < HeadDim; i++) q[r * HeadDim + i] = (float)(a * d[i] + Gaussian(rng));
        }
        return (q, d);
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    private static float[] Normalize(float[] v)
    {
        var n = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(v));
        return v.Select(x => x / n).ToArray();
    }

    private static double Cos(float[] a, float[] b) => System.Numerics.Tensors.TensorPrimitives.CosineSimilarity(a, b);

    [SkippableTheory]
    [InlineData(0.9, -1)]   // most queries along +d: the filter is -d, so the score -<k, f> = <k, d>
    [InlineData(0.1, +1)]   // most queries along -d: the filter is +d
    public void Calibration_recovers_the_planted_direction_with_the_documented_sign(double positiveShare, int expectedSign)
    {
        var (q, d) = Planted(positiveShare, seed: 1);
        var f = QFilterCalibration.FilterOf(q, Rows, HeadDim);
        var cos = Cos(f, d);
        Assert.True(Math.Abs(cos) > 0.99, $"|cos| = {Math.Abs(cos)}");
        Assert.Equal(expectedSign, Math.Sign(cos));
        Assert.InRange(Math.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(f)), 0.999, 1.001);
    }

    [SkippableTheory]
    [InlineData(0.9, 1)]
    [InlineData(0.3, 2)]
    [InlineData(0.5, 3)]    // no planted sign preference: the sign rule still has to agree
    public void Filter_equals_numpy_svd_with_the_same_sign_rule(double positiveShare, int seed)
    {
        if (!PyTorchReference.Available()) return;
        var (q, _) = Planted(positiveShare, seed);
        var expected = PyTorchReference.QFilter(q, HeadDim);
        Assert.Equal(expected, QFilterCalibration.FilterOf(q, Rows, HeadDim), new FloatTolerance(1e-4f));
    }

    [SkippableFact]
    public void Query_heads_sharing_a_kv_head_are_averaged()
    {
        var (q1, d) = Planted(0.9, seed: 2);
        var (q2, _) = Planted(0.9, seed: 2);
        var filters = QFilterCalibration.FromQueries([[q1, q2]], Rows, kvHeads: 1, HeadDim);
        Assert.Equal(QFilterCalibration.FilterOf(q1, Rows, HeadDim), filters.Filter(0, 0).ToArray(), new FloatTolerance(1e-6f));
        Assert.True(Cos(filters.Filter(0, 0).ToArray(), d) < -0.99);
    }

    [SkippableTheory]
    [InlineData(0.9)]
    [InlineData(0.1)]
    public void Eviction_keeps_the_keys_the_filter_favours(double positiveShare)
    {
        // Queries mostly along s·d: attention goes to keys with a large <k, s·d>, which qfilters must keep.
        var (q, d) = Planted(positiveShare, seed: 3);
        var filters = QFilterCalibration.FromQueries([[q]], Rows, 1, HeadDim);
        double s = positiveShare > 0.5 ? 1 : -1;
        using var backend = new CpuBackend(1);
        using var cache = new Cluster.Engine.KvCache.SequenceKvCache(backend, 1, 1, HeadDim, 40, DensePolicy.Default);
        var layer = cache.Layers[0];
        // Eight old keys point along s·d (the direction queries favour), the others mostly not.
        var rng = new Random(5);
        var favoured = new[] { 1, 5, 6, 11, 20, 27, 30, 33 };
        var keys = new float[40 * HeadDim];
        for (int t = 0; t < 40; t++)
        {
            double along = favoured.Contains(t) ? 3 : rng.NextDouble() * 2 - 1;
            for (int i = 0; i < HeadDim; i++) keys[t * HeadDim + i] = (float)(s * along * d[i] + 0.3 * Gaussian(rng));
        }
        backend.CopyFromHost(keys, layer.K);
        for (int t = 0; t < 40; t++) layer.Positions[t] = t;
        layer.Lengths[0] = 40;
        new QFiltersPolicy(12, 4, filters).Compress(backend, new Cluster.Engine.Model.RopeTable(HeadDim, 10000, Cluster.Engine.Model.RopeLayout.Halves), cache);
        var kept = layer.Positions.AsSpan(0, layer.Lengths[0]).ToArray();
        int[] expected = [.. favoured, 36, 37, 38, 39]; // and the recent window of 4, untouched
        Assert.Equal(expected, kept);
    }

    [SkippableFact]
    public void Filters_round_trip_through_safetensors_and_published_bf16_files_load()
    {
        using var dir = new TempDir();
        var data = Enumerable.Range(0, 2 * 3 * 8).Select(i => (float)(i - 20) / 8).ToArray();
        var filters = new QFilters(2, 3, 8, data);
        filters.Save(dir.File("ours.safetensors"));
        Assert.Equal(data, QFilters.Load(dir.File("ours.safetensors"), 2, 3, 8).Data);

        // The published files hold q_filters [layers, kv_heads, head_dim], often in bf16.
        SafetensorsWriter.Write(dir.File("published.safetensors"),
            [new SafetensorsWriter.TensorSpec("q_filters", [2, 3, 8], d => data.CopyTo(d))], WeightType.BF16);
        Assert.Equal(data, QFilters.Load(dir.File("published.safetensors"), 2, 3, 8).Data); // exact in bf16: multiples of 1/8
        var e = Assert.Throws<ModelFormatException>(() => QFilters.Load(dir.File("ours.safetensors"), 2, 4, 8));
        Assert.Contains("shape", e.Message);
    }

    private sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tolerance;
        public int GetHashCode(float x) => 0;
    }
}
