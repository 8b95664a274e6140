using Cluster.Engine.Kernels;
using Cluster.Engine.Kernels.Ilgpu;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Xunit;

namespace Cluster.Engine.Tests.Kernels.Ilgpu;

/// <summary>
/// Every kernel of <see cref="IlgpuBackend"/> on ILGPU's CPU accelerator against <see cref="CpuBackend"/>
/// on the same inputs (fp32 weights: the two must agree to rounding). Shapes are small and odd
/// (not multiples of the GEMM tile or group sizes) so edge handling is exercised.
/// </summary>
public sealed class IlgpuKernelTests : IClassFixture<IlgpuCpuFixture>
{
    private const double Tolerance = 1e-5;
    private readonly IlgpuBackend _gpu;
    private readonly CpuBackend _cpu = new(threads: 1);

    public IlgpuKernelTests(IlgpuCpuFixture fixture) => _gpu = fixture.Backend;

    private static float[] Random(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>The same host data as a tensor of each backend.</summary>
    private (Tensor Cpu, Tensor Gpu) Both(float[] data)
    {
        var c = _cpu.Allocate(data.Length);
        _cpu.CopyFromHost(data, c);
        var g = _gpu.Allocate(data.Length);
        _gpu.CopyFromHost(data, g);
        return (c, g);
    }

    private float[] Read(IComputeBackend b, Tensor t, int n)
    {
        var r = new float[n];
        b.CopyToHost(t, 0, r);
        return r;
    }

    private void AssertSame((Tensor Cpu, Tensor Gpu) t, int n, double tolerance = Tolerance) =>
        Assert.InRange(MaxAbsDiff(Read(_cpu, t.Cpu, n), Read(_gpu, t.Gpu, n)), 0, tolerance);

    private static double MaxAbsDiff(float[] a, float[] b) => Model.TestModels.MaxAbsDiff(a, b);

    [Fact]
    public void Host_copies_round_trip_at_an_offset()
    {
        var t = _gpu.Allocate(10);
        _gpu.CopyFromHost([1f, 2f, 3f], t, offset: 4);
        Assert.Equal([0f, 0f, 0f, 0f, 1f, 2f, 3f, 0f, 0f, 0f], Read(_gpu, t, 10));
        var part = new float[2];
        _gpu.CopyToHost(t, 5, part);
        Assert.Equal([2f, 3f], part);
    }

    [Fact]
    public void Embed_matches_and_rejects_ids_outside_the_vocabulary()
    {
        var table = Both(Random(7 * 5, 1));
        var x = Both(new float[3 * 5]);
        int[] ids = [6, 0, 3];
        _cpu.Embed(table.Cpu, ids, 5, x.Cpu);
        _gpu.Embed(table.Gpu, ids, 5, x.Gpu);
        AssertSame(x, 15, 0);
        Assert.Throws<ArgumentOutOfRangeException>(() => _gpu.Embed(table.Gpu, [7], 5, x.Gpu));
    }

    [Theory]
    [InlineData(1, 37, false)]
    [InlineData(5, 64, false)]
    [InlineData(1, 37, true)]   // the group reduction the GPU runs
    [InlineData(5, 64, true)]
    public void RmsNorm_matches(int rows, int dim, bool grouped)
    {
        _gpu.GroupedKernels = grouped;
        var x = Both(Random(rows * dim, 2, 3f));
        var w = Both(Random(dim, 3));
        var y = Both(new float[rows * dim]);
        _cpu.RmsNorm(x.Cpu, w.Cpu, y.Cpu, rows, dim, 1e-5f);
        _gpu.RmsNorm(x.Gpu, w.Gpu, y.Gpu, rows, dim, 1e-5f);
        _gpu.GroupedKernels = false;
        AssertSame(y, rows * dim);
    }

    [Theory]
    [InlineData(1, 19, 23, 0, false)]
    [InlineData(6, 33, 17, 2, false)]
    [InlineData(1, 19, 23, 0, true)]   // the shared-memory tiled kernel (the GPU's fallback without cuBLAS)
    [InlineData(6, 33, 17, 2, true)]
    public void MatMul_matches_with_a_row_offset(int rows, int inDim, int outDim, int rowOffset, bool tiled)
    {
        _gpu.GroupedKernels = tiled;
        var x = Both(Random((rows + rowOffset) * inDim, 4));
        var w = Both(Random(outDim * inDim, 5));
        var y = Both(new float[rows * outDim]);
        _cpu.MatMul(x.Cpu, w.Cpu, y.Cpu, rows, inDim, outDim, rowOffset);
        _gpu.MatMul(x.Gpu, w.Gpu, y.Gpu, rows, inDim, outDim, rowOffset);
        _gpu.GroupedKernels = false;
        AssertSame(y, rows * outDim);
    }

    [Theory]
    [InlineData(RopeLayout.Halves)]
    [InlineData(RopeLayout.Interleaved)]
    public void Rope_matches_in_both_layouts(RopeLayout layout)
    {
        int heads = 4, kvHeads = 2, hd = 8;
        int[] positions = [0, 5, 1000];
        var rope = new RopeTable(hd, 10000, layout);
        var q = Both(Random(3 * heads * hd, 6));
        var k = Both(Random(3 * kvHeads * hd, 7));
        _cpu.Rope(q.Cpu, k.Cpu, positions, heads, kvHeads, rope);
        _gpu.Rope(q.Gpu, k.Gpu, positions, heads, kvHeads, rope);
        AssertSame(q, 3 * heads * hd);
        AssertSame(k, 3 * kvHeads * hd);
        // A second call with other positions must not reuse the first call's angles.
        _cpu.Rope(q.Cpu, k.Cpu, [7, 8, 9], heads, kvHeads, rope);
        _gpu.Rope(q.Gpu, k.Gpu, [7, 8, 9], heads, kvHeads, rope);
        AssertSame(q, 3 * heads * hd);
    }

    [Fact]
    public void SwiGlu_and_Add_match()
    {
        var g = Both(Random(301, 8, 4f));
        var u = Both(Random(301, 9));
        _cpu.SwiGlu(g.Cpu, u.Cpu, 301);
        _gpu.SwiGlu(g.Gpu, u.Gpu, 301);
        AssertSame(g, 301);
        _cpu.Add(g.Cpu, u.Cpu, 300);
        _gpu.Add(g.Gpu, u.Gpu, 300);
        AssertSame(g, 301);
    }

    /// <summary>Two caches, one per backend, filled from the same keys and values.</summary>
    private (KvCacheLayer Cpu, KvCacheLayer Gpu) Caches(int kvHeads, int hd, int capacity) =>
        (new KvCacheLayer(_cpu, kvHeads, hd, capacity), new KvCacheLayer(_gpu, kvHeads, hd, capacity));

    private void Append((KvCacheLayer Cpu, KvCacheLayer Gpu) c, int tokens, int firstPosition, int seed)
    {
        int width = c.Cpu.KvHeads * c.Cpu.HeadDim;
        var k = Both(Random((tokens + 1) * width, seed));
        var v = Both(Random((tokens + 1) * width, seed + 1));
        var positions = Enumerable.Range(firstPosition, tokens).ToArray();
        _cpu.AppendKv(k.Cpu, v.Cpu, 1, positions, c.Cpu);
        _gpu.AppendKv(k.Gpu, v.Gpu, 1, positions, c.Gpu);
    }

    private void AssertSameCache((KvCacheLayer Cpu, KvCacheLayer Gpu) c)
    {
        Assert.Equal(c.Cpu.Lengths, c.Gpu.Lengths);
        for (int h = 0; h < c.Cpu.KvHeads; h++)
        {
            int n = c.Cpu.Lengths[h] * c.Cpu.HeadDim;
            var (kc, kg, vc, vg) = (new float[n], new float[n], new float[n], new float[n]);
            _cpu.CopyToHost(c.Cpu.K, c.Cpu.Offset(h, 0), kc);
            _gpu.CopyToHost(c.Gpu.K, c.Gpu.Offset(h, 0), kg);
            _cpu.CopyToHost(c.Cpu.V, c.Cpu.Offset(h, 0), vc);
            _gpu.CopyToHost(c.Gpu.V, c.Gpu.Offset(h, 0), vg);
            Assert.InRange(MaxAbsDiff(kc, kg), 0, Tolerance);
            Assert.Equal(vc, vg);
            Assert.Equal(c.Cpu.Positions.AsSpan(h * c.Cpu.Capacity, c.Cpu.Lengths[h]).ToArray(), c.Gpu.Positions.AsSpan(h * c.Gpu.Capacity, c.Gpu.Lengths[h]).ToArray());
        }
    }

    [Fact]
    public void AppendKv_CompactKv_and_RotateKeys_match()
    {
        var c = Caches(kvHeads: 2, hd: 6, capacity: 12);
        Append(c, 5, 0, 10);
        Append(c, 3, 5, 20);
        AssertSameCache(c);
        // Per-head compaction leaves heads at different lengths; later appends must follow each head.
        _cpu.CompactKv(c.Cpu, 0, [0, 2, 3, 7]);
        _gpu.CompactKv(c.Gpu, 0, [0, 2, 3, 7]);
        _cpu.CompactKv(c.Cpu, 1, [0, 1, 2, 5, 6, 7]);
        _gpu.CompactKv(c.Gpu, 1, [0, 1, 2, 5, 6, 7]);
        Append(c, 2, 8, 30);
        AssertSameCache(c);
        var rope = new RopeTable(6, 10000, RopeLayout.Halves);
        _cpu.RotateKeys(c.Cpu, 1, [0, -3, -3, 2, 0], rope);
        _gpu.RotateKeys(c.Gpu, 1, [0, -3, -3, 2, 0], rope);
        AssertSameCache(c);
        Assert.Throws<ArgumentException>(() => _gpu.CompactKv(c.Gpu, 0, [1, 0]));
        Assert.Throws<InvalidOperationException>(() => Append(c, 7, 10, 40));
    }

    [Fact]
    public void MoveKvSlot_matches_and_keeps_lengths()
    {
        // Window policies' fast eviction fills the evicted slot with the last one (OldestFirstEviction).
        var c = Caches(kvHeads: 2, hd: 6, capacity: 12);
        Append(c, 8, 0, 10);
        _cpu.MoveKvSlot(c.Cpu, 0, 7, 2);
        _gpu.MoveKvSlot(c.Gpu, 0, 7, 2);
        _cpu.MoveKvSlot(c.Cpu, 1, 6, 0);
        _gpu.MoveKvSlot(c.Gpu, 1, 6, 0);
        _gpu.MoveKvSlot(c.Gpu, 1, 3, 3);
        AssertSameCache(c);
        Assert.Equal(7, c.Gpu.Positions[2]);
        Assert.Equal(c.Gpu.Positions[c.Gpu.Capacity + 6], c.Gpu.Positions[c.Gpu.Capacity]);
        Assert.Equal([8, 8], c.Gpu.Lengths);
        Assert.Throws<ArgumentException>(() => _gpu.MoveKvSlot(c.Gpu, 0, 8, 1));
    }

    [Theory]
    [InlineData(4, 4, 7, 1, false)]   // prefill from an empty cache, one KV head per query head
    [InlineData(8, 2, 5, 3, false)]   // GQA, a chunk after cached tokens
    [InlineData(8, 2, 1, 9, false)]   // GQA decode
    [InlineData(8, 2, 5, 3, true)]    // the group-reduction softmax the GPU runs
    [InlineData(8, 2, 1, 40, true)]
    public void Attention_matches(int heads, int kvHeads, int tokens, int cached, bool grouped)
    {
        int hd = 8;
        var c = Caches(kvHeads, hd, cached + tokens + 1);
        Append(c, cached, 0, 50);
        Append(c, tokens, cached, 60);
        var q = Both(Random((tokens + 2) * heads * hd, 70));
        var o = Both(new float[(tokens + 2) * heads * hd]);
        _cpu.Attention(q.Cpu, o.Cpu, [new AttentionSegment(c.Cpu, 2, tokens)], heads, hd);
        _gpu.GroupedKernels = grouped;
        _gpu.Attention(q.Gpu, o.Gpu, [new AttentionSegment(c.Gpu, 2, tokens)], heads, hd);
        _gpu.GroupedKernels = false;
        AssertSame(o, (tokens + 2) * heads * hd);
    }

    [Fact]
    public void Attention_over_several_segments_and_uneven_heads_matches()
    {
        int heads = 4, kvHeads = 2, hd = 8;
        var a = Caches(kvHeads, hd, 16);
        var b = Caches(kvHeads, hd, 16);
        Append(a, 9, 0, 80);
        Append(b, 4, 0, 90);
        _cpu.CompactKv(a.Cpu, 1, [0, 3, 4, 8]);
        _gpu.CompactKv(a.Gpu, 1, [0, 3, 4, 8]);
        Append(a, 1, 9, 100);
        Append(b, 1, 4, 110);
        var q = Both(Random(2 * heads * hd, 120));
        var o = Both(new float[2 * heads * hd]);
        _cpu.Attention(q.Cpu, o.Cpu, [new AttentionSegment(a.Cpu, 0, 1), new AttentionSegment(b.Cpu, 1, 1)], heads, hd);
        _gpu.Attention(q.Gpu, o.Gpu, [new AttentionSegment(a.Gpu, 0, 1), new AttentionSegment(b.Gpu, 1, 1)], heads, hd);
        AssertSame(o, 2 * heads * hd);
    }
}

/// <summary>One ILGPU CPU accelerator for a test class (opening one compiles every kernel).</summary>
public sealed class IlgpuCpuFixture : IDisposable
{
    public IlgpuBackend Backend { get; } = new(new DeviceSpec(DeviceKind.IlgpuCpu));

    public void Dispose() => Backend.Dispose();
}
