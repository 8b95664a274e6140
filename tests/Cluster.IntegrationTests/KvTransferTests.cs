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
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], new Dictionary<string, string?>());
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

    /// <summary>A get of a session whose put is announced but not yet sent waits at the cache manager; that
    /// wait is recorded on its own (llm_kv_get_wait_seconds), not as transfer time, which runs from the
    /// first message to the last as a put's does.</summary>
    [Fact]
    public async Task A_get_waiting_for_an_announced_put_records_the_wait_apart_from_the_transfer()
    {
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], new Dictionary<string, string?>());
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        const int layers = 2, heads = 2, headDim = 8, tokens = 40;
        var positions = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray();
        var blocks = Enumerable.Range(0, layers).Select(l => new KvLayerBlock(l, positions, new float[heads * tokens * headDim], new float[heads * tokens * headDim])).ToList();
        const string session = "transfer-wait";

        var recorded = new List<(string Instrument, double Seconds)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == KvTransferMetrics.MeterName && i.Name is "llm_kv_transfer_seconds" or "llm_kv_get_wait_seconds") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<double>((i, value, tags, _) =>
        {
            bool get = i.Name == "llm_kv_get_wait_seconds" || tags.ToArray().Any(t => t is { Key: "direction", Value: "get" });
            if (get) lock (recorded) recorded.Add((i.Name, value));
        });
        listener.Start();

        await new LlmCluster.V1.CacheManager.CacheManagerClient(channel).ReservePutAsync(new ReservePutRequest { SessionId = session });
        var get = KvTransfer.GetAsync(channel, session, 0, CancellationToken.None);
        const double held = 0.5;
        await Task.Delay(TimeSpan.FromSeconds(held));
        Assert.False(get.IsCompleted, "the get must wait for the announced put");
        var header = new PutHeader
        {
            SessionId = session, Layout = KvLayoutMapping.For(layers, heads, headDim, new RopeTable(headDim, 10000, RopeLayout.Halves), KvPrecision.Fp32),
            Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens, Reserved = true,
        };
        await KvTransfer.PutAsync(channel, header, blocks, CancellationToken.None);
        var (handle, got, _) = await get;
        Assert.Equal(tokens, handle.TokenCount);
        Assert.Equal(layers, got.Count);

        lock (recorded)
        {
            var wait = Assert.Single(recorded, r => r.Instrument == "llm_kv_get_wait_seconds").Seconds;
            var transfer = Assert.Single(recorded, r => r.Instrument == "llm_kv_transfer_seconds").Seconds;
            Assert.True(wait >= held, $"the wait ({wait:F3} s) covers the {held} s the put was held back");
            Assert.True(transfer < held, $"the transfer ({transfer:F3} s for 10 KB) does not include the wait");
        }
    }
}
