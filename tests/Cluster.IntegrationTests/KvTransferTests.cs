using System.Diagnostics.Metrics;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// Issue 17 through a real cache manager on loopback: the layout's dtype decides the bytes on the wire
/// (16-bit: half of fp32's, counted), the cache manager serves them as stored, the reader gets fp32
/// exactly (fp32) or the rounded values (bf16, fp16), and every transfer is recorded once in
/// llm_kv_transfer_* with its direction and dtype.
/// </summary>
public sealed class KvTransferTests
{
    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public async Task Put_and_get_move_the_dtype_s_bytes_and_record_them(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        const int layers = 3, heads = 2, headDim = 8, tokens = 300;
        var rng = new Random(9);
        float[] Data() => Enumerable.Range(0, heads * tokens * headDim).Select(_ => (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-10, 8)))).ToArray();
        var positions = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray();
        var blocks = Enumerable.Range(0, layers).Select(l => new KvLayerBlock(l, positions, Data(), Data())).ToList();
        long fp32Bytes = (long)layers * heads * tokens * headDim * 2 * sizeof(float);

        var recorded = new List<(string Direction, string Dtype, long Bytes)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == KvTransferMetrics.MeterName && i.Name == "llm_kv_transfer_bytes") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            var all = tags.ToArray();
            string Tag(string key) => (string)all.Single(t => t.Key == key).Value!;
            lock (recorded) recorded.Add((Tag("direction"), Tag("dtype"), value));
        });
        listener.Start();

        var session = $"transfer-{dtype}";
        var header = new PutHeader { SessionId = session, Layout = KvLayoutMapping.For(layers, heads, headDim, new RopeTable(headDim, 10000, RopeLayout.Halves), p), Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens };
        var (stored, sent) = await KvTransfer.PutAsync(channel, header, blocks, CancellationToken.None);
        Assert.Equal(p == KvPrecision.Fp32 ? fp32Bytes : fp32Bytes / 2, sent);
        Assert.Equal(KvLayoutMapping.ToWire(p), stored.Kv.Layout.Dtype);

        var (handle, got, received) = await KvTransfer.GetAsync(channel, session, 0, CancellationToken.None);
        Assert.Equal(sent, received);
        Assert.Equal(KvLayoutMapping.ToWire(p), handle.Layout.Dtype);
        Assert.Equal(layers, got.Count);
        for (int l = 0; l < layers; l++)
        {
            Assert.Equal(blocks[l].Positions, got[l].Positions);
            Assert.Equal(blocks[l].Keys.Select(x => KvWireTests.Reference(x, p)), got[l].Keys);   // fp32: Reference is x itself
            Assert.Equal(blocks[l].Values.Select(x => KvWireTests.Reference(x, p)), got[l].Values);
        }

        listener.RecordObservableInstruments();
        lock (recorded)
        {
            Assert.Contains(("put", dtype, sent), recorded);
            Assert.Contains(("get", dtype, received), recorded);
        }
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public async Task A_get_handing_blocks_over_reuses_one_layer_s_arrays_and_each_block_is_whole(string dtype)
    {
        // The decode worker's prefetch takes each block as it lands and drops it: the next block of the
        // same size is written into the same arrays. Each block handed over must still be exactly its
        // layer's data (checked inside the callback, before the arrays are reused), and a layer of
        // another size (the last, shorter here) gets arrays of its own.
        var p = KvPrecisions.Parse(dtype);
        await using var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        const int layers = 4, heads = 2, headDim = 8, tokens = 200;
        var rng = new Random(4);
        var blocks = Enumerable.Range(0, layers).Select(l =>
        {
            int n = l == layers - 1 ? tokens / 2 : tokens; // a policy may keep fewer rows in one layer
            var pos = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, n).ToArray()).ToArray();
            float[] Data() => Enumerable.Range(0, heads * n * headDim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            return new KvLayerBlock(l, pos, Data(), Data());
        }).ToList();
        var header = new PutHeader { SessionId = "handed", Layout = KvLayoutMapping.For(layers, heads, headDim, new RopeTable(headDim, 10000, RopeLayout.Halves), p), Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens };
        await KvTransfer.PutAsync(channel, header, blocks, CancellationToken.None);

        var arrays = new List<float[]>();
        int handed = 0;
        var (_, kept, _) = await KvTransfer.GetAsync(channel, "handed", 0, CancellationToken.None, onBlock: (_, b) =>
        {
            var sent = blocks[b.Layer];
            Assert.Equal(sent.Positions, b.Positions);
            Assert.Equal(sent.Keys.Select(x => KvWireTests.Reference(x, p)), b.Keys);
            Assert.Equal(sent.Values.Select(x => KvWireTests.Reference(x, p)), b.Values);
            arrays.Add(b.Keys);
            handed++;
        });
        Assert.Empty(kept);
        Assert.Equal(layers, handed);
        Assert.Same(arrays[0], arrays[1]);      // same size: the arrays of the block before
        Assert.Same(arrays[0], arrays[2]);
        Assert.NotSame(arrays[2], arrays[3]);   // another size: fresh ones
    }

    [Fact]
    public void An_unset_dtype_reads_as_fp32_and_an_unknown_one_is_refused()
    {
        Assert.Equal(KvPrecision.Fp32, KvLayoutMapping.Precision(new KvLayout()));
        var e = Assert.Throws<Grpc.Core.RpcException>(() => KvLayoutMapping.Precision(new KvLayout { Dtype = (KvDtype)99 }));
        Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, e.StatusCode);
    }

    [Fact]
    public void Kv_dtype_is_read_from_the_command_line_or_LLM_KV_DTYPE_and_a_bad_one_names_the_option()
    {
        var none = new Dictionary<string, string?>();
        Assert.Equal(KvPrecision.Fp32, ServiceOptions.Parse(ServiceRole.Prefill, [], none).KvPrecision);
        Assert.Equal(KvPrecision.Bf16, ServiceOptions.Parse(ServiceRole.Decode, ["--kv-dtype", "bf16"], none).KvPrecision);
        Assert.Equal(KvPrecision.Fp16, ServiceOptions.Parse(ServiceRole.Prefill, [], new Dictionary<string, string?> { ["LLM_KV_DTYPE"] = "fp16" }).KvPrecision);
        Assert.Contains("--kv-dtype", Assert.Throws<ArgumentException>(() => ServiceOptions.Parse(ServiceRole.Prefill, ["--kv-dtype", "int8"], none)).Message);
        // The cache manager takes what each put says; it has no such option.
        Assert.Throws<ArgumentException>(() => ServiceOptions.Parse(ServiceRole.CacheManager, ["--kv-dtype", "bf16"], none));
    }
}
