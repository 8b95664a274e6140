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
