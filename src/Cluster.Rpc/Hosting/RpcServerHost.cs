using System.Net;
using Cluster.Rpc.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cluster.Rpc.Hosting;

/// <summary>
/// A Kestrel host with two ports: gRPC on an HTTP/2-only port (Kestrel cannot serve cleartext
/// HTTP/1.1 and HTTP/2 on one port: without TLS it falls back to HTTP/1.1) and /healthz plus
/// /metrics on an HTTP/1.1 port. Services only register their methods.
/// </summary>
public sealed class RpcServerHost : IAsyncDisposable
{
    // [0] gRPC, [1] HTTP/1.1; filled when Kestrel applies its options, and once the server is
    // started their IPEndPoint holds the bound port (port 0 resolved).
    private readonly ListenOptions?[] _listen;

    private RpcServerHost(WebApplication app, RpcServiceRegistry registry, ListenOptions?[] listen)
    {
        App = app;
        Registry = registry;
        _listen = listen;
    }

    public WebApplication App { get; }

    public RpcServiceRegistry Registry { get; }

    /// <summary>The bound gRPC endpoint (the real port once started).</summary>
    public IPEndPoint GrpcEndPoint => _listen[0]?.IPEndPoint ?? throw NotStarted();

    /// <summary>The bound HTTP/1.1 endpoint (the real port once started).</summary>
    public IPEndPoint HttpEndPoint => _listen[1]?.IPEndPoint ?? throw NotStarted();

    /// <summary>"http://host:port" of the gRPC port, for a client channel.</summary>
    public Uri GrpcAddress => new($"http://{GrpcEndPoint}");

    /// <param name="register">Adds the methods; called once the host's services exist.</param>
    /// <param name="configureServices">Adds the services the handlers need.</param>
    public static RpcServerHost Create(RpcHostOptions options, Action<RpcServiceRegistry, IServiceProvider> register, Action<IServiceCollection>? configureServices = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        configureServices?.Invoke(builder.Services);

        var listen = new ListenOptions?[2];
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Per-call limits are lifted per request too; these are the server-wide defaults.
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Limits.MinRequestBodyDataRate = null;
            kestrel.Limits.MinResponseDataRate = null;
            kestrel.Limits.Http2.MaxStreamsPerConnection = options.MaxStreamsPerConnection;
            kestrel.Limits.Http2.InitialStreamWindowSize = options.Http2StreamWindowSize;
            kestrel.Limits.Http2.InitialConnectionWindowSize = Math.Max(options.Http2ConnectionWindowSize, options.Http2StreamWindowSize);
            kestrel.AddServerHeader = false;
            kestrel.Listen(options.GrpcEndPoint, l => { l.Protocols = HttpProtocols.Http2; listen[0] = l; });
            kestrel.Listen(options.HttpEndPoint, l => { l.Protocols = HttpProtocols.Http1; listen[1] = l; });
        });

        var app = builder.Build();
        var registry = new RpcServiceRegistry(options.Server, app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Cluster.Rpc.Server"));
        register(registry, app.Services);

        // The gRPC port speaks only HTTP/2 and the other only HTTP/1.1, so the protocol tells
        // which port a request came in on.
        app.Use(next => context => HttpProtocol.IsHttp2(context.Request.Protocol) ? registry.DispatchAsync(context) : next(context));
        app.MapGet("/healthz", () => options.IsHealthy() ? Results.Text("ok") : Results.Text("unhealthy", statusCode: StatusCodes.Status503ServiceUnavailable));
        options.MapHttpEndpoints?.Invoke(app);

        return new RpcServerHost(app, registry, listen);
    }

    public Task StartAsync(CancellationToken cancellationToken = default) => App.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken = default) => App.StopAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await App.StopAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        await App.DisposeAsync().ConfigureAwait(false);
    }

    private static InvalidOperationException NotStarted() => new("The host is not started yet");
}
