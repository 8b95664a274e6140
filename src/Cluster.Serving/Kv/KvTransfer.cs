using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Cluster.Engine.KvCache;
using Cluster.Serving.Mapping;
using Grpc.Core;
using Grpc.Net.Client;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// Moves a sequence's KV blocks to and from the cache manager (PutBlocks / GetBlocks), in the dtype of
/// the layout (fp32 blocks converted as they are written into, or read out of, the messages), and
/// records every completed transfer in <see cref="KvTransferMetrics"/>.
/// </summary>
public static class KvTransfer
{
    /// <summary>Streams the blocks after <paramref name="header"/>, in its layout's dtype; returns the stored handle and the block bytes sent.</summary>
    public static async Task<(PutBlocksResponse Response, long Bytes)> PutAsync(GrpcChannel cacheManager, PutHeader header, IReadOnlyList<KvLayerBlock> blocks, CancellationToken ct)
    {
        var (response, bytes, _) = await PutCountedAsync(cacheManager, header, blocks.Select(b => (b, (int[][]?)null)).ToList(), ct);
        return (response, bytes);
    }

    /// <summary>
    /// A whole cache (<paramref name="blocks"/> with null removed lists and header.base_version 0) or an
    /// incremental checkpoint (each layer's sent tokens and removed positions, header.base_version set).
    /// Returns the response, the K/V bytes sent and every byte of the stream's messages (headers and
    /// positions included: what a test of "bytes on the wire" counts).
    /// </summary>
    public static Task<(PutBlocksResponse Response, long Bytes, long MessageBytes)> PutCountedAsync(GrpcChannel cacheManager, PutHeader header,
        IReadOnlyList<(KvLayerBlock Block, int[][]? Removed)> blocks, CancellationToken ct) =>
        PutFromAsync(cacheManager, header, Each(blocks), ct);

    /// <summary>
    /// A whole cache whose blocks are still being made (layer-wise streaming: a prefill worker's layers,
    /// written as the model finishes each one, so the transfer overlaps the rest of the pass). The
    /// stream ends when <paramref name="blocks"/> completes; the time recorded leaves out the waits for blocks.
    /// </summary>
    public static async Task<(PutBlocksResponse Response, long Bytes)> PutAsync(GrpcChannel cacheManager, PutHeader header, ChannelReader<KvLayerBlock> blocks, CancellationToken ct)
    {
        var (response, bytes, _) = await PutFromAsync(cacheManager, header, Whole(blocks, ct), ct);
        return (response, bytes);

        static async IAsyncEnumerable<(KvLayerBlock, int[][]?)> Whole(ChannelReader<KvLayerBlock> blocks, [EnumeratorCancellation] CancellationToken ct)
        {
            await foreach (var block in blocks.ReadAllAsync(ct)) yield return (block, null);
        }
    }

    private static async IAsyncEnumerable<(KvLayerBlock, int[][]?)> Each(IReadOnlyList<(KvLayerBlock Block, int[][]? Removed)> blocks)
    {
        foreach (var b in blocks) yield return b;
        await Task.CompletedTask;
    }

    private static async Task<(PutBlocksResponse Response, long Bytes, long MessageBytes)> PutFromAsync(GrpcChannel cacheManager, PutHeader header,
        IAsyncEnumerable<(KvLayerBlock Block, int[][]? Removed)> blocks, CancellationToken ct)
    {
        var precision = KvLayoutMapping.Precision(header.Layout);
        var sw = Stopwatch.StartNew();
        var waiting = TimeSpan.Zero; // for blocks still being made (a streamed put): not transfer time
        // KvWireCodec: chunk messages are written straight into gRPC's buffer (the same protobuf bytes).
        using var call = cacheManager.CreateCallInvoker().AsyncClientStreamingCall(KvWireCodec.PutBlocks, null, new CallOptions(cancellationToken: ct));
        long bytes = 0, messages = 0;
        async Task Write(PutBlocksRequest r)
        {
            messages += r.CalculateSize();
            await call.RequestStream.WriteAsync(r);
        }
        await Write(new PutBlocksRequest { Header = header });
        await using var next = blocks.GetAsyncEnumerator(ct);
        while (true)
        {
            long waited = Stopwatch.GetTimestamp();
            bool more = await next.MoveNextAsync();
            waiting += Stopwatch.GetElapsedTime(waited);
            if (!more) break;
            var (block, removed) = next.Current;
            var blockHeader = KvWire.Header(block, precision);
            if (removed is not null) foreach (var r in removed) blockHeader.Removed.Add(new HeadTokens { Positions = { r } });
            await Write(new PutBlocksRequest { Block = blockHeader });
            foreach (var chunk in KvWire.Chunks(block, precision))
            {
                await Write(new PutBlocksRequest { Chunk = chunk });
                bytes += chunk.Data.Length;
            }
        }
        await call.RequestStream.CompleteAsync();
        var response = await call.ResponseAsync;
        KvTransferMetrics.Record("put", precision, bytes, sw.Elapsed - waiting);
        return (response, bytes, messages);
    }

    /// <summary>Fetches a session's blocks (version 0: the latest, followed as it lands when its put is
    /// still streaming in), widened to fp32 as they arrive. NOT_FOUND when the cache manager has none.</summary>
    /// <param name="onBlock">Called with each block as soon as it is whole (in the reading loop), with the handle read so far
    /// (the list returned is then empty). The callback must not keep the block's arrays: once it returns they
    /// receive the next block of the same size (a prompt's layers all are), so a transfer takes fresh memory
    /// for one layer instead of all of them.</param>
    public static async Task<(KvHandle Handle, List<KvLayerBlock> Blocks, long Bytes)> GetAsync(GrpcChannel cacheManager, string sessionId, long version, CancellationToken ct, int maxTokens = 0,
        Action<KvHandle, KvLayerBlock>? onBlock = null)
    {
        var sw = Stopwatch.StartNew();
        // KvWireCodec: each chunk's bytes go from gRPC's received payload straight into the block being
        // assembled (widened to fp32 on the way for a 16-bit dtype); the same protobuf bytes on the wire.
        using var call = cacheManager.CreateCallInvoker().AsyncServerStreamingCall(KvWireCodec.GetBlocks, null, new CallOptions(cancellationToken: ct),
            new GetBlocksRequest { SessionId = sessionId, Version = version, MaxTokenCount = maxTokens });
        KvHandle? handle = null;
        var precision = KvPrecision.Fp32;
        bool followed = false;
        var blocks = new List<KvLayerBlock>();
        KvWire.BlockAssembler? current = null;
        KvLayerBlock? spare = null; // with onBlock: the last block, whose arrays the next one reuses
        long bytes = 0;
        var sink = new KvChunkSink();
        KvWireCodec.BeginReceive(sink);
        try
        {
            await foreach (var item in call.ResponseStream.ReadAllAsync(ct))
            {
                switch (item.ItemCase)
                {
                    case GetBlocksResponse.ItemOneofCase.Kv:
                        if (handle is null)
                        {
                            // The transfer starts here (first message to last, as a put's); before it, the wait.
                            KvTransferMetrics.RecordGetWait(sw.Elapsed);
                            sw.Restart();
                            followed = item.Kv.Version == 0; // a put still landing: its provisional handle (stored versions start at 1)
                        }
                        // A put followed while it lands sends a provisional handle first and the stored
                        // version's last: the last one read is the one that holds.
                        handle = item.Kv;
                        precision = KvLayoutMapping.Precision(handle.Layout);
                        break;
                    case GetBlocksResponse.ItemOneofCase.Block:
                        if (handle is null) throw new RpcException(new Status(StatusCode.Internal, "cache manager sent a block before the KV handle"));
                        if (current is { IsComplete: false }) throw new RpcException(new Status(StatusCode.Internal, "cache manager started a block before finishing the last"));
                        if (current is not null) Built(current);
                        sink.Block = current = new KvWire.BlockAssembler(item.Block, handle.Layout.HeadDim, precision, reuse: spare);
                        spare = null;
                        break;
                    case GetBlocksResponse.ItemOneofCase.Chunk:
                        var block = current ?? throw new RpcException(new Status(StatusCode.Internal, "cache manager sent data before a block header"));
                        if (!KvWireCodec.IsDelivered(item.Chunk)) block.Add(item.Chunk);
                        break;
                }
            }
        }
        finally
        {
            KvWireCodec.EndReceive();
        }
        if (current is not null) Built(current);
        void Built(KvWire.BlockAssembler assembler)
        {
            var built = assembler.Build(); // throws unless every byte arrived
            bytes += assembler.DataBytes;
            if (onBlock is not null)
            {
                onBlock(handle!, built);
                spare = built;
            }
            else blocks.Add(built);
        }
        KvTransferMetrics.Record("get", precision, bytes, sw.Elapsed, followed ? "streaming" : "stored");
        return (handle ?? throw new RpcException(new Status(StatusCode.Internal, "cache manager sent no KV handle")), blocks, bytes);
    }
}
