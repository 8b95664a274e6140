using System.Threading.Channels;
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

/// <summary>
/// Issue 17, "decode can start once the last layer lands": a get of a session whose announced put is
/// streaming in follows its blocks as they land (a real cache manager on loopback), instead of waiting
/// for the put to end; the stored version's handle comes last; a put that fails midway fails its
/// followers with NOT_FOUND, as a get after a failed put would.
/// </summary>
public sealed class LivePutTests
{
    private const int Layers = 3, Heads = 2, HeadDim = 8, Tokens = 50;

    private static List<KvLayerBlock> Blocks()
    {
        var rng = new Random(5);
        var positions = Enumerable.Range(0, Heads).Select(_ => Enumerable.Range(0, Tokens).ToArray()).ToArray();
        float[] Data() => Enumerable.Range(0, Heads * Tokens * HeadDim).Select(_ => (float)rng.NextDouble()).ToArray();
        return Enumerable.Range(0, Layers).Select(l => new KvLayerBlock(l, positions, Data(), Data())).ToList();
    }

    private static PutHeader Header(string session) => new()
    {
        SessionId = session, Layout = KvLayoutMapping.For(Layers, Heads, HeadDim, new RopeTable(HeadDim, 10000, RopeLayout.Halves), KvPrecision.Fp32),
        Policy = PolicyMapping.ToWire("dense"), TokenCount = Tokens, Reserved = true,
    };

    private static async Task<GetBlocksResponse> NextAsync(IAsyncStreamReader<GetBlocksResponse> stream)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.True(await stream.MoveNext(timeout.Token), "the get ended early");
        return stream.Current;
    }

    [Fact]
    public async Task A_get_follows_a_streaming_put_block_by_block_and_ends_with_the_stored_version()
    {
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        var client = new LlmCluster.V1.CacheManager.CacheManagerClient(channel);
        const string session = "live-put";
        var blocks = Blocks();

        await client.ReservePutAsync(new ReservePutRequest { SessionId = session });
        var layers = Channel.CreateUnbounded<KvLayerBlock>();
        var put = KvTransfer.PutAsync(channel, Header(session), layers.Reader, CancellationToken.None);
        layers.Writer.TryWrite(blocks[0]);

        // With the put still open (two layers not yet made), the get already serves the first one.
        using var get = client.GetBlocks(new GetBlocksRequest { SessionId = session, MaxTokenCount = Tokens });
        var provisional = await NextAsync(get.ResponseStream);
        Assert.Equal(Tokens, provisional.Kv.TokenCount);
        Assert.Equal(0L, provisional.Kv.Version); // not stored yet
        var first = await NextAsync(get.ResponseStream);
        Assert.Equal(0, first.Block.Layer);
        Assert.False(put.IsCompleted);

        layers.Writer.TryWrite(blocks[1]);
        layers.Writer.TryWrite(blocks[2]);
        layers.Writer.Complete();
        var (stored, _) = await put;

        // The rest, then the stored version's handle; the data equal what was put.
        var got = new Dictionary<int, List<byte>>();
        var current = first.Block.Layer;
        got[current] = [];
        KvHandle? final = null;
        while (await get.ResponseStream.MoveNext(CancellationToken.None))
        {
            var r = get.ResponseStream.Current;
            if (r.ItemCase == GetBlocksResponse.ItemOneofCase.Block) got[current = r.Block.Layer] = [];
            else if (r.ItemCase == GetBlocksResponse.ItemOneofCase.Chunk) got[current].AddRange(r.Chunk.Data);
            else final = r.Kv;
        }
        Assert.NotNull(final);
        Assert.Equal(stored.Kv.Version, final.Version);
        Assert.True(final.Version > 0);
        Assert.Equal(Enumerable.Range(0, Layers), got.Keys.Order());
        foreach (var b in blocks)
        {
            var bytes = got[b.Layer].ToArray();
            Assert.Equal(b.Keys.Length + b.Values.Length, bytes.Length / sizeof(float));
            var expected = WireKvBlock.From(b, KvPrecision.Fp32);
            Assert.Equal(expected.Keys.Concat(expected.Values), bytes);
        }

        // KvTransfer's reader keeps the last handle: a follower's get returns the stored version.
        var (stored2, (handle, read, _)) = await KvTestData.PutFollowedAsync(channel, Header(session), blocks);
        Assert.Equal(stored2.Kv.Version, handle.Version);
        Assert.Equal(blocks.Select(b => b.Keys), read.Select(b => b.Keys));
        Assert.Equal(blocks.Select(b => b.Values), read.Select(b => b.Values));
    }

    [Fact]
    public async Task A_put_that_fails_midway_fails_its_followers_with_not_found()
    {
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        const string session = "live-put-fails";
        var blocks = Blocks();

        await new LlmCluster.V1.CacheManager.CacheManagerClient(channel).ReservePutAsync(new ReservePutRequest { SessionId = session });
        using var writer = new CancellationTokenSource();
        var layers = Channel.CreateUnbounded<KvLayerBlock>();
        var put = KvTransfer.PutAsync(channel, Header(session), layers.Reader, writer.Token);
        layers.Writer.TryWrite(blocks[0]);
        var follower = KvTransfer.GetAsync(channel, session, 0, CancellationToken.None);
        await Task.Delay(200);
        writer.Cancel(); // the prefill worker goes away midway
        await Assert.ThrowsAnyAsync<Exception>(() => put);
        var e = await Assert.ThrowsAsync<RpcException>(() => follower);
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
    }
}
