using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Cluster.Engine.Compression;
using Cluster.Sessions;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Routing;
using LlmCluster.V1;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;


namespace Cluster.Gateway;

/// <summary>
/// The public entry point: validates and tokenizes requests, routes them to a prefill worker and
/// then a decode worker (least outstanding requests among healthy ones), and streams tokens to the
/// client, logging each one in the session store before it is sent so that Resume can replay it.
/// </summary>
public sealed partial class GatewayService : LlmCluster.V1.Gateway.GatewayBase, IClusterService
{
    public const string MeterName = "LlmCluster.Gateway";

    private GatewayService(ServiceOptions options, ModelHost host, ISessionStore sessions, IAsyncDisposable? sessionOwner, ILogger logger)
    {
        Options = options;
        Host = host;
        Sessions = sessions;
        _sessionOwner = sessionOwner;
        Logger = logger;
        Prefill = new WorkerPool("prefill", ServiceOptions.Addresses(options.Prefill, "--prefill"));
        Decode = new WorkerPool("decode", ServiceOptions.Addresses(options.Decode, "--decode"));
        Metrics = new GatewayMetrics(WorkersUp);
        _sessionCalls = new SessionCalls(this);
    }

    private readonly IAsyncDisposable? _sessionOwner;
    private readonly SessionCalls _sessionCalls;

    internal ServiceOptions Options { get; }
    internal ModelHost Host { get; }
    internal ISessionStore Sessions { get; }
    internal ILogger Logger { get; }
    internal WorkerPool Prefill { get; }
    internal WorkerPool Decode { get; }
    internal GatewayMetrics Metrics { get; }

    /// <summary>Requests in flight by session id, for Abort.</summary>
    internal ConcurrentDictionary<string, CancellationTokenSource> Live { get; } = new();

    public static async Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging)
    {
        var logger = logging.CreateLogger("gateway");
        var host = ModelHost.Load(options, logger, weights: false);
        // The policy every request falls back to must parse before the first request arrives.
        Serving.Mapping.PolicyMapping.Parse(options.Policy, host.Policies);
        var ttl = TimeSpan.FromSeconds(Math.Max(1, options.SessionTtl));
        string? template = options.ChatTemplate is { Length: > 0 } t ? (File.Exists(t) ? File.ReadAllText(t) : t) : null;
        if (string.IsNullOrEmpty(options.Redis))
            return new GatewayService(options, host, new InMemorySessionStore(ttl), null, logger) { ChatTemplate = template };
        // The process's one multiplexer; the gateway owns it and disposes it with the store.
        var redis = await RedisConnector.ConnectAsync(options.Redis);
        logger.LogInformation("session store: redis at {Redis}", options.Redis);
        return new GatewayService(options, host, new RedisSessionStore(redis, ttl, logger: logging.CreateLogger<RedisSessionStore>()), redis, logger) { ChatTemplate = template };
    }

    /// <summary>Ready while at least one prefill and one decode worker pass health checks.</summary>
    public bool IsReady => Prefill.Workers.Any(w => w.Healthy) && Decode.Workers.Any(w => w.Healthy);

    public IReadOnlyList<string> MeterNames => [MeterName];

    public void MapGrpcServices(IEndpointRouteBuilder endpoints) => endpoints.MapGrpcService<GatewayService>();

    public void ConfigureServices(IServiceCollection services) => services.AddHostedService(_ => new WorkerHealthMonitor(Prefill, Decode));

    /// <summary>The OpenAI-compatible API and the playground (OpenAi/).</summary>
    public void MapHttpEndpoints(IEndpointRouteBuilder endpoints) => OpenAi.OpenAiEndpoints.Map(endpoints, this);

    /// <summary>The served model's name (GetModelInfo.name, the OpenAI API's model id).</summary>
    internal string ModelId => Path.GetFileName(Path.TrimEndingDirectorySeparator(Host.Path));

    internal DateTimeOffset Started { get; } = DateTimeOffset.UtcNow;

    /// <summary>--chat-template (a file or the template itself), else null: the model's own.</summary>
    internal string? ChatTemplate { get; private init; }

    public override Task Generate(GenerateRequest request, IServerStreamWriter<GenerateResponse> responseStream, ServerCallContext context) =>
        new GenerateCall(this, responseStream, context).RunAsync(request);

    public override Task Resume(ResumeRequest request, IServerStreamWriter<GenerateResponse> responseStream, ServerCallContext context) =>
        new ResumeCall(this, request, responseStream, context).RunAsync();

    public override Task<ListSessionsResponse> ListSessions(ListSessionsRequest request, ServerCallContext context) => _sessionCalls.List(request, context);

    public override Task<DeleteSessionResponse> DeleteSession(DeleteSessionRequest request, ServerCallContext context) => _sessionCalls.Delete(request, context);

    public override Task<AbortResponse> Abort(AbortRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "session_id is required"));
        // A conversation's later turns stream under "<session>/<turn>": the session's id stops them too.
        var running = Live.Where(e => e.Key == request.SessionId || e.Key.StartsWith(request.SessionId + "/", StringComparison.Ordinal)).ToList();
        foreach (var (_, cts) in running) cts.Cancel();
        return Task.FromResult(new AbortResponse { Aborted = running.Count > 0 });
    }

    public override Task<ModelInfo> GetModelInfo(GetModelInfoRequest request, ServerCallContext context)
    {
        var c = Host.Config;
        var info = new ModelInfo
        {
            Name = ModelId,
            Architecture = "llama",
            VocabSize = c.VocabSize,
            ContextLength = c.MaxPositions,
            KvLayout = new KvLayout { NumLayers = c.Layers, NumKvHeads = c.KvHeads, HeadDim = c.HeadDim, Dtype = KvDtype.F32, KeysPostRope = true },
            EosTokenIds = { c.EosIds },
            BosTokenId = c.BosId,
            KvPolicies = { KvPolicyRegistry.Names },
        };
        return Task.FromResult(info);
    }

    public override Task<HealthResponse> Health(HealthRequest request, ServerCallContext context)
    {
        var response = new HealthResponse { Status = IsReady ? HealthResponse.Types.ServingStatus.Serving : HealthResponse.Types.ServingStatus.NotServing };
        foreach (var pool in new[] { Prefill, Decode })
            foreach (var w in pool.Workers) response.Components[$"{pool.Role}:{w.Address}"] = w.Healthy ? "up" : "down";
        return Task.FromResult(response);
    }

    private IEnumerable<Measurement<int>> WorkersUp() =>
        new[] { Prefill, Decode }.SelectMany(pool => pool.Workers.Select(w => new Measurement<int>(w.Healthy ? 1 : 0,
            new KeyValuePair<string, object?>("role", pool.Role), new KeyValuePair<string, object?>("worker", w.Address.Authority))));

    public async ValueTask DisposeAsync()
    {
        Prefill.Dispose();
        Decode.Dispose();
        Metrics.Dispose();
        _sessionCalls.Dispose();
        if (_sessionOwner is not null) await _sessionOwner.DisposeAsync();
        Host.Dispose();
    }
}
