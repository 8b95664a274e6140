using System.Diagnostics.Metrics;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Grpc.Net.Client;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>KvTransferMetrics are process-wide: this class runs alone so that no other test's transfer
/// lands in what it measures.</summary>
[Collection(nameof(KvGetWaitTests))]
public sealed class KvGetWaitTests
{
    private const int Heads = 2, HeadDim = 8, Tokens = 40;

    private static async Task<(RunningService Cm, GrpcChannel Channel)> StartCacheManagerAsync()
    {
        var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        return (cm, GrpcChannels.Create(cm.GrpcAddress));
    }

    /// <summary>Zero KV of <paramref name="layers"/> layers (Heads x Tokens x HeadDim each).</summary>
    private static List<KvLayerBlock> Blocks(int layers)
    {
        var positions = Enumerable.Range(0, Heads).Select(_ => Enumerable.Range(0, Tokens).ToArray()).ToArray();
        return Enumerable.Range(0, layers).Select(l => new KvLayerBlock(l, positions, new float[Heads * Tokens * HeadDim], new float[Heads * Tokens * HeadDim])).ToList();
    }

    /// <summary>An announced put's header (the test calls ReservePut first).</summary>
    private static PutHeader Header(string session, int layers) => new()
    {
        SessionId = session, Layout = KvLayoutMapping.For(layers, Heads, HeadDim, new RopeTable(HeadDim, 10000, RopeLayout.Halves), KvPrecision.Fp32),
        Policy = PolicyMapping.ToWire("dense"), TokenCount = Tokens, Reserved = true,
    };

    /// <summary>A get of a session whose put is announced but not yet sent waits at the cache manager; that
    /// wait is recorded on its own (llm_kv_get_wait_seconds), not as transfer time, which runs from the
    /// first message to the last as a put's does.</summary>
    [Fact]
    public async Task A_get_waiting_for_an_announced_put_records_the_wait_apart_from_the_transfer()
    {
        var (cm, channel) = await StartCacheManagerAsync();
        await using var _ = cm;
        using var __ = channel;
        const int layers = 2;
        var blocks = Blocks(layers);
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
        const double held = 1.0, margin = 0.1; // timers may fire a little early; a 10 KB transfer takes ms
        await Task.Delay(TimeSpan.FromSeconds(held));
        Assert.False(get.IsCompleted, "the get must wait for the announced put");
        await KvTransfer.PutAsync(channel, Header(session, layers), blocks, CancellationToken.None);
        var (handle, got, _) = await get;
        Assert.Equal(Tokens, handle.TokenCount);
        Assert.Equal(layers, got.Count);

        lock (recorded)
        {
            var wait = Assert.Single(recorded, r => r.Instrument == "llm_kv_get_wait_seconds").Seconds;
            var transfer = Assert.Single(recorded, r => r.Instrument == "llm_kv_transfer_seconds").Seconds;
            Assert.True(wait >= held - margin, $"the wait ({wait:F3} s) covers the {held} s the put was held back");
            Assert.True(transfer < held - margin, $"the transfer ({transfer:F3} s for 10 KB) does not include the wait");
        }
    }

    /// <summary>A get that follows a put still landing (as a decode worker's prefetch does) spans the rest of
    /// the put: it is labelled served="streaming", a get of a stored version served="stored", so that a wire
    /// rate can leave the followers out.</summary>
    [Fact]
    public async Task A_get_that_followed_a_landing_put_is_labelled_apart_from_one_of_a_stored_version()
    {
        var (cm, channel) = await StartCacheManagerAsync();
        await using var _ = cm;
        using var __ = channel;
        const int layers = 3;
        var blocks = Blocks(layers);
        const string session = "transfer-follow";

        var served = new List<string?>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (i, l) => { if (i.Meter.Name == KvTransferMetrics.MeterName && i.Name == "llm_kv_transfer_seconds") l.EnableMeasurementEvents(i); };
        listener.SetMeasurementEventCallback<double>((i, value, tags, _) =>
        {
            var all = tags.ToArray();
            if (all.Any(t => t is { Key: "direction", Value: "get" })) lock (served) served.Add(all.FirstOrDefault(t => t.Key == "served").Value as string);
        });
        listener.Start();

        await KvTestData.PutFollowedAsync(channel, Header(session, layers), blocks);
        await KvTransfer.GetAsync(channel, session, 0, CancellationToken.None); // the stored version
        lock (served) Assert.Equal(["streaming", "stored"], served);
    }
}

[CollectionDefinition(nameof(KvGetWaitTests), DisableParallelization = true)]
public sealed class KvGetWaitCollection;
