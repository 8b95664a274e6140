using Cluster.Engine.Compression;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.KvCache;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using LlmCluster.V1;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Cluster.CacheManager;

/// <summary>
/// Stores each session's KV blocks, compressed by the session's policy on the way in
/// (<see cref="KvSessionStore"/>), and serves them to decode workers. It needs no model: the layout
/// that comes with the blocks describes their shape and RoPE frequencies.
/// PutBlocks and GetBlocks use <see cref="KvWireCodec"/> (the same protobuf bytes, fewer copies).
/// </summary>
[BindServiceMethod(typeof(CacheManagerService), nameof(BindWithKvCodec))]
public sealed class CacheManagerService : LlmCluster.V1.CacheManager.CacheManagerBase, IClusterService
{
    /// <summary>
    /// The generated binding, with <see cref="KvWireCodec"/>'s methods for PutBlocks and GetBlocks.
    /// Grpc.AspNetCore finds it through the attribute; its second parameter must be the generated base
    /// type, which Grpc.AspNetCore takes as the type that declares the handlers.
    /// </summary>
    public static void BindWithKvCodec(ServiceBinderBase binder, LlmCluster.V1.CacheManager.CacheManagerBase? service) =>
        LlmCluster.V1.CacheManager.BindService(new KvWireCodec.CacheManagerBinder(binder), service!);

    public const string MeterName = "LlmCluster.CacheManager";
    private readonly KvSessionStore _store;
    private readonly PendingPuts _pending = new();
    private readonly LivePuts _live = new();
    private readonly CacheManagerMetrics _metrics;

    private CacheManagerService(KvSessionStore store)
    {
        _store = store;
        _metrics = new CacheManagerMetrics(store);
    }

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging)
    {
        // Q-Filters (Godey et al. 2025) are calibrated per model; their shape is checked on use.
        var filters = string.IsNullOrEmpty(options.QFilters) ? null : QFilters.Load(options.QFilters);
        // Evicted sessions go to the spill directory when there is one (a restart on it serves them), else they are dropped.
        var spill = string.IsNullOrEmpty(options.KvSpill) ? null
            : new KvSpill(options.KvSpill, (long)options.KvSpillMb << 20, logging.CreateLogger<KvSpill>());
        var store = new KvSessionStore((long)options.MemoryMb << 20, TimeSpan.FromSeconds(options.SessionTtl), new PolicyOptions(filters),
            minIdle: TimeSpan.FromSeconds(options.KvMinIdle), spill: spill);
        return Task.FromResult<IClusterService>(new CacheManagerService(store));
    }

    public bool IsReady => true;

    /// <summary>Kestrel's pools with 64 KiB blocks instead of 4 KiB: a put's bytes are received in 16x fewer
    /// socket reads (<see cref="LargeBlockMemoryPool"/>; the cache manager has few connections).</summary>
    public void ConfigureServices(IServiceCollection services) =>
        services.AddSingleton<IMemoryPoolFactory<byte>>(new LargeBlockMemoryPool.Factory());

    public IReadOnlyList<string> MeterNames => [MeterName];

    public void MapGrpcServices(IEndpointRouteBuilder endpoints) => endpoints.MapGrpcService<CacheManagerService>();

    public override async Task<ReleaseResponse> Release(ReleaseRequest request, ServerCallContext context)
    {
        // A put announced for the session (a decode worker's final checkpoint lands after its stream
        // completed) lands first, so that a release right after a stream leaves nothing behind.
        await _pending.WaitAsync(request.SessionId, context.CancellationToken);
        return new ReleaseResponse { Released = _store.Release(request.SessionId) };
    }

    public override Task<ReservePutResponse> ReservePut(ReservePutRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "session_id is required"));
        _pending.Reserve(request.SessionId);
        return Task.FromResult(new ReservePutResponse());
    }

    public override async Task<PutBlocksResponse> PutBlocks(IAsyncStreamReader<PutBlocksRequest> requests, ServerCallContext context)
    {
        PutHeader? header = null;
        PutBlocksResponse? response = null;
        try
        {
            return response = await StoreAsync(requests, context, h => header = h);
        }
        finally
        {
            // A refused delta stored nothing: its reservation waits for the whole put the writer sends next.
            if (header is { Reserved: true } && response is not { BaseMissing: true }) _pending.Ended(header.SessionId);
        }
    }

    private async Task<PutBlocksResponse> StoreAsync(IAsyncStreamReader<PutBlocksRequest> requests, ServerCallContext context, Action<PutHeader> headerRead)
    {
        LivePut? live = null; // a whole put that readers wait for: they follow its blocks as they land
        try
        {
            return await ReceiveAndStoreAsync(requests, context, headerRead, started => live = started);
        }
        finally
        {
            live?.Fail("its put ended without storing it"); // (nothing once it has completed)
        }
    }

    /// <summary>Reads a put's stream into blocks and stores them; a whole put that readers were told to
    /// wait for is <paramref name="followable"/>: its blocks are served as they land.</summary>
    private async Task<PutBlocksResponse> ReceiveAndStoreAsync(IAsyncStreamReader<PutBlocksRequest> requests, ServerCallContext context, Action<PutHeader> headerRead, Action<LivePut> followable)
    {
        PutHeader? header = null;
        LivePut? live = null;
        var precision = KvPrecision.Fp32;
        KvWire.BlockAssembler? current = null;
        var blocks = new List<WireKvBlock>();
        var removed = new List<int[][]>(); // per block: a delta block's removed positions per head
        // KvWireCodec: each chunk's bytes go from the received payload straight into the block's stored arrays.
        var sink = new KvChunkSink();
        KvWireCodec.BeginReceive(sink);
        try
        {
            await foreach (var item in requests.ReadAllAsync(context.CancellationToken))
            {
                switch (item.ItemCase)
                {
                    case PutBlocksRequest.ItemOneofCase.Header when header is null:
                        header = item.Header;
                        headerRead(header);
                        if (header.Layout is null || header.Layout.HeadDim <= 0 || header.Layout.RopeInverseFrequencies.Count * 2 != header.Layout.HeadDim)
                            throw new RpcException(new Status(StatusCode.InvalidArgument, "PutHeader.layout must give head_dim and head_dim/2 rope_inverse_frequencies"));
                        precision = KvLayoutMapping.Precision(header.Layout);
                        if (header is { Reserved: true, BaseVersion: 0 }) followable(live = _live.Start(header.SessionId, header.Layout, header.Policy, header.TokenCount));
                        break;
                    case PutBlocksRequest.ItemOneofCase.Block when header is not null:
                        if (current is not null) Landed(current.BuildWire());
                        // Stored and served in the writer's dtype, as the bytes came.
                        sink.Block = current = new KvWire.BlockAssembler(item.Block, header.Layout.HeadDim, precision, widen: false);
                        if (header.BaseVersion == 0 && item.Block.Removed.Count > 0)
                            throw new RpcException(new Status(StatusCode.InvalidArgument, "KvBlockHeader.removed is for delta puts (PutHeader.base_version set)"));
                        removed.Add(item.Block.Removed.Select(h => h.Positions.ToArray()).ToArray());
                        break;
                    case PutBlocksRequest.ItemOneofCase.Chunk when current is not null:
                        if (!KvWireCodec.IsDelivered(item.Chunk)) current.Add(item.Chunk);
                        if (current.IsComplete)
                        {
                            // Landed now, not when the next block starts: a follower can have it (the last
                            // layer of a streamed prompt would otherwise wait for the end of the stream).
                            Landed(current.BuildWire());
                            sink.Block = current = null;
                        }
                        break;
                    default:
                        throw new RpcException(new Status(StatusCode.InvalidArgument, $"PutBlocks: unexpected {item.ItemCase} (a stream is one header, then per block a block header and its chunks)"));
                }
            }
        }
        finally
        {
            KvWireCodec.EndReceive();
        }
        if (header is null) throw new RpcException(new Status(StatusCode.InvalidArgument, "PutBlocks: no header"));
        if (current is not null) Landed(current.BuildWire());
        void Landed(WireKvBlock block)
        {
            blocks.Add(block);
            live?.Add(block);
        }

        var layout = header.Layout;
        var shape = new KvShape(layout.NumLayers, layout.NumKvHeads, layout.HeadDim, KvLayoutMapping.Rope(layout), precision);
        var policy = PolicyMapping.ToSpec(header.Policy) ?? "dense";
        StoredKv kv;
        TimeSpan elapsed;
        if (header.BaseVersion == 0)
        {
            (kv, elapsed) = _store.Put(header.SessionId, shape, policy, header.TokenCount, blocks, header.Checkpoint, header.OutputIndex);
            live?.Complete(kv);
        }
        else
        {
            // An empty removed list means none gone in every head.
            var deltas = blocks.Select((b, i) => (b, removed[i].Length == 0 ? b.Positions.Select(_ => Array.Empty<int>()).ToArray() : removed[i])).ToList();
            try
            {
                (kv, elapsed) = _store.PutDelta(header.SessionId, shape, policy, header.TokenCount, header.BaseVersion, header.BaseTokenCount, deltas, header.Checkpoint, header.OutputIndex);
            }
            catch (KvBaseMissingException)
            {
                return new PutBlocksResponse { BaseMissing = true };
            }
        }
        var policyTag = new KeyValuePair<string, object?>("policy", kv.Policy.Split('(')[0]);
        _metrics.CompressionSeconds.Record(elapsed.TotalSeconds, policyTag);
        // Kept of all the tokens the session has seen: prefill compresses before it sends, so what
        // arrives is usually within the budget already.
        if (kv.TokensSeen > 0) _metrics.CompressionRatio.Record((double)kv.KeptTokens / kv.TokensSeen, policyTag);
        return new PutBlocksResponse { Kv = Handle(kv, layout, header.Policy), KeptTokens = kv.KeptTokens };
    }

    public override async Task GetBlocks(GetBlocksRequest request, IServerStreamWriter<GetBlocksResponse> responses, ServerCallContext context)
    {
        // A put announced for the session lands first; the newest version, while it streams in, is
        // followed instead (also when its first message comes in while this waits).
        while (true)
        {
            var started = _live.NextStart;
            if (request is { Version: 0, Layers.Count: 0 } && _live.Find(request.SessionId) is { } live
                && (request.MaxTokenCount == 0 || live.TokenCount <= request.MaxTokenCount))
            {
                await FollowAsync(live, responses, context.CancellationToken);
                return;
            }
            var landed = _pending.WaitAsync(request.SessionId, context.CancellationToken);
            if (await Task.WhenAny(landed, started) == landed)
            {
                await landed;
                break;
            }
        }
        var kv = _store.Get(request.SessionId, request.Version, request.MaxTokenCount);
        if (kv is null)
        {
            _metrics.Misses.Add(1);
            throw new RpcException(new Status(StatusCode.NotFound, $"no KV for session '{request.SessionId}'" +
                (request.Version != 0 ? $" at version {request.Version}" : request.MaxTokenCount > 0 ? $" holding at most {request.MaxTokenCount} tokens" : "") +
                " (never stored, released, superseded, or evicted for room and not spilled)"));
        }
        _metrics.Hits.Add(1, new KeyValuePair<string, object?>("served", "stored"));
        await responses.WriteAsync(new GetBlocksResponse { Kv = Handle(kv, LayoutOf(kv), PolicyMapping.ToWire(kv.Policy)) });
        foreach (var block in kv.Layers.Where(b => request.Layers.Count == 0 || request.Layers.Contains(b.Layer)))
        {
            await responses.WriteAsync(new GetBlocksResponse { Block = KvWire.Header(block) });
            foreach (var chunk in KvWire.Chunks(block)) await responses.WriteAsync(new GetBlocksResponse { Chunk = chunk });
        }
    }

    /// <summary>
    /// Serves a put as it lands: a provisional handle (version 0: not stored yet) so the reader can
    /// assemble blocks, each block as soon as it is whole, and the stored version's handle last (a
    /// reader keeps the last handle it reads).
    /// </summary>
    private async Task FollowAsync(LivePut live, IServerStreamWriter<GetBlocksResponse> responses, CancellationToken ct)
    {
        await responses.WriteAsync(new GetBlocksResponse { Kv = new KvHandle { SessionId = live.SessionId, Layout = live.Layout, TokenCount = live.TokenCount, Policy = live.Policy } }, ct);
        for (int i = 0; ; i++)
        {
            var (block, stored) = await live.NextAsync(i, ct);
            if (stored is not null)
            {
                _metrics.Hits.Add(1, new KeyValuePair<string, object?>("served", "streaming"));
                await responses.WriteAsync(new GetBlocksResponse { Kv = Handle(stored, LayoutOf(stored), PolicyMapping.ToWire(stored.Policy)) }, ct);
                return;
            }
            await responses.WriteAsync(new GetBlocksResponse { Block = KvWire.Header(block!) }, ct);
            foreach (var chunk in KvWire.Chunks(block!)) await responses.WriteAsync(new GetBlocksResponse { Chunk = chunk }, ct);
        }
    }

    public override async Task<Checkpoint> GetCheckpoint(GetCheckpointRequest request, ServerCallContext context)
    {
        await _pending.WaitAsync(request.SessionId, context.CancellationToken); // as GetBlocks: an announced put lands first
        var kv = _store.Describe(request.SessionId) ?? throw new RpcException(new Status(StatusCode.NotFound, $"no KV for session '{request.SessionId}'"));
        return new Checkpoint { Kv = Handle(kv, LayoutOf(kv), PolicyMapping.ToWire(kv.Policy)), OutputIndex = kv.OutputIndex };
    }

    private static KvLayout LayoutOf(StoredKv kv) => KvLayoutMapping.For(kv.Shape.Layers, kv.Shape.KvHeads, kv.Shape.HeadDim, kv.Shape.Rope, kv.Shape.Precision);

    private static KvHandle Handle(StoredKv kv, KvLayout layout, KvPolicy? policy) => new()
    {
        SessionId = kv.SessionId,
        Layout = layout,
        TokenCount = kv.TokensSeen,
        Version = kv.Version,
        Policy = policy ?? PolicyMapping.ToWire(kv.Policy),
    };

    public ValueTask DisposeAsync()
    {
        _metrics.Dispose();
        _store.Dispose();
        return ValueTask.CompletedTask;
    }
}
