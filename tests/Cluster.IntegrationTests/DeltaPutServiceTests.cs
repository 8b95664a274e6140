using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Issue 17, incremental checkpoints through a real cache manager on loopback: a delta put
/// lands as the whole cache, a delta onto a version the cache manager lacks is answered base_missing
/// without storing anything and without ending its put's reservation (the whole put that follows ends
/// it), and a Release waits for an announced put.</summary>
public sealed class DeltaPutServiceTests
{
    private const int Layers = 2, Heads = 2, HeadDim = 4;

    /// <summary>Each value a function of (layer, head, token, dim): a longer cache keeps the shorter one's rows.</summary>
    private static KvLayerBlock Block(int layer, int tokens, float salt)
    {
        float V(int i) => layer * 100_000 + i / (tokens * HeadDim) * 10_000 + i / HeadDim % tokens * 10 + i % HeadDim + salt;
        return new(layer, Enumerable.Range(0, Heads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray(),
            Enumerable.Range(0, Heads * tokens * HeadDim).Select(V).ToArray(),
            Enumerable.Range(0, Heads * tokens * HeadDim).Select(i => -V(i)).ToArray());
    }

    private static List<KvLayerBlock> Cache(int tokens, float salt = 0) => Enumerable.Range(0, Layers).Select(l => Block(l, tokens, salt)).ToList();

    private static PutHeader Header(string session, int tokens) => new()
    {
        SessionId = session, Layout = KvLayoutMapping.For(Layers, Heads, HeadDim, new RopeTable(HeadDim, 10000, RopeLayout.Halves)),
        Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens, Checkpoint = true,
    };

    private static List<(KvLayerBlock, int[][]?)> Whole(List<KvLayerBlock> blocks) => blocks.Select(b => (b, (int[][]?)null)).ToList();

    private static List<(KvLayerBlock, int[][]?)> Delta(List<KvLayerBlock> from, List<KvLayerBlock> to) =>
        KvDelta.Diff(from, to, HeadDim).Select(d => (d.Sent, (int[][]?)d.Removed)).ToList();

    [Fact]
    public async Task A_refused_delta_stores_nothing_and_keeps_its_reservation_for_the_whole_put()
    {
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        var client = new LlmCluster.V1.CacheManager.CacheManagerClient(channel);

        // A delta onto the stored version: the cache manager holds the whole new cache, for fewer bytes.
        var v1 = Cache(40);
        var (r1, _, wholeBytes) = await KvTransfer.PutCountedAsync(channel, Header("a", 40), Whole(v1), CancellationToken.None);
        var v2 = v1.Select(b => Block(b.Layer, 48, 0)).ToList(); // 8 more tokens, the first 40 unchanged
        var h2 = Header("a", 48);
        h2.BaseVersion = r1.Kv.Version;
        h2.BaseTokenCount = 40;
        var (r2, _, deltaBytes) = await KvTransfer.PutCountedAsync(channel, h2, Delta(v1, v2), CancellationToken.None);
        Assert.False(r2.BaseMissing);
        Assert.Equal((2L, 48), (r2.Kv.Version, r2.Kv.TokenCount));
        Assert.True(deltaBytes * 3 < wholeBytes, $"delta {deltaBytes} bytes, whole {wholeBytes}");
        var (_, got, _) = await KvTransfer.GetAsync(channel, "a", 0, CancellationToken.None);
        for (int l = 0; l < Layers; l++)
        {
            Assert.Equal(v2[l].Keys, got[l].Keys);
            Assert.Equal(v2[l].Values, got[l].Values);
            Assert.Equal(v2[l].Positions, got[l].Positions);
        }

        // Announced, then a delta onto a version that is not there: refused, the reservation stands.
        await client.ReservePutAsync(new ReservePutRequest { SessionId = "a" });
        var h3 = Header("a", 56);
        h3.BaseVersion = 7;
        h3.BaseTokenCount = 48;
        h3.Reserved = true;
        var v3 = v1.Select(b => Block(b.Layer, 56, 0)).ToList();
        var (r3, _, _) = await KvTransfer.PutCountedAsync(channel, h3, Delta(v2, v3), CancellationToken.None);
        Assert.True(r3.BaseMissing);
        Assert.Null(r3.Kv);
        var read = KvTransfer.GetAsync(channel, "a", 0, CancellationToken.None);
        await Task.Delay(300);
        Assert.False(read.IsCompleted, "a read of the session went ahead of the announced put");
        var h4 = Header("a", 56);
        h4.Reserved = true;
        var (r4, _, _) = await KvTransfer.PutCountedAsync(channel, h4, Whole(v3), CancellationToken.None);
        Assert.Equal(3L, r4.Kv.Version);
        var (handle, _, _) = await read.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal((3L, 56), (handle.Version, handle.TokenCount)); // the whole put, not the version before it

        // A release waits for an announced put too, so nothing is left behind by a put landing after it.
        await client.ReservePutAsync(new ReservePutRequest { SessionId = "a" });
        var release = client.ReleaseAsync(new ReleaseRequest { SessionId = "a" }).ResponseAsync;
        await Task.Delay(300);
        Assert.False(release.IsCompleted, "a release of the session went ahead of the announced put");
        var h5 = Header("a", 56);
        h5.Reserved = true;
        h5.BaseVersion = 3;
        h5.BaseTokenCount = 56;
        var (r5, _, _) = await KvTransfer.PutCountedAsync(channel, h5, Delta(v3, v3), CancellationToken.None); // nothing changed: empty blocks
        Assert.Equal((4L, 56), (r5.Kv.Version, r5.Kv.TokenCount));
        Assert.True((await release.WaitAsync(TimeSpan.FromSeconds(10))).Released);
        var e = await Assert.ThrowsAsync<RpcException>(() => KvTransfer.GetAsync(channel, "a", 0, CancellationToken.None));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
    }
}
