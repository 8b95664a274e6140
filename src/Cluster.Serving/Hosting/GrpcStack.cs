using System.Net;
using Cluster.Serving.Routing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Cluster.Serving.Hosting;

/// <summary>
/// The gRPC hosting every service shares (ServiceHost) and the tests' and benchmarks' hosts reuse, so
/// they exercise exactly the stack the services run on.
/// </summary>
public static class GrpcStack
{
    /// <summary>
    /// An HTTP/2 connection on which nothing arrived for this long gets a PING from the server (Kestrel's
    /// default is never). Together with <see cref="KeepAlivePingTimeout"/> this is how a connection whose
    /// client vanished without closing it (a crashed host, a dropped network) is found and closed: with no
    /// minimum data rates (below) and no pings, such a connection and every stream on it was held until TCP
    /// gave up, which for a stream with nothing to send is never. A client that is there answers a PING
    /// from its HTTP/2 stack whatever its streams are doing, so a long stream that is idle (a request
    /// waiting in a queue, a slow generation) is not cut. grpc-go servers offer the same (keepalive Time
    /// and Timeout); one minute is what the cluster's own clients use for their pings (GrpcChannels).
    /// </summary>
    public static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(60);

    /// <summary>How long the server waits for the answer to its PING before it closes the connection.</summary>
    public static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(20);

    /// <summary>
    /// gRPC on an HTTP/2-only port (Kestrel cannot serve cleartext HTTP/1.1 and HTTP/2 on one port:
    /// without TLS it falls back to HTTP/1.1) and /healthz, /metrics (and the gateway's HTTP API) on an
    /// HTTP/1.1 port. No body cap or minimum data rates server-wide (each gRPC message is bounded by
    /// <see cref="GrpcChannels.MaxMessageBytes"/> instead), more than the default 100 streams, and
    /// keep-alive pings on HTTP/2 (<see cref="KeepAlivePingDelay"/>; tests pass shorter ones).
    /// </summary>
    public static void ConfigureKestrel(KestrelServerOptions kestrel, IPAddress address, int grpcPort, int httpPort,
        int maxStreamsPerConnection = 1000, Action<ListenOptions>? grpcBound = null, Action<ListenOptions>? httpBound = null,
        TimeSpan? keepAlivePingDelay = null, TimeSpan? keepAlivePingTimeout = null)
    {
        kestrel.Limits.MaxRequestBodySize = null;
        kestrel.Limits.MinRequestBodyDataRate = null;
        kestrel.Limits.MinResponseDataRate = null;
        kestrel.Limits.Http2.KeepAlivePingDelay = keepAlivePingDelay ?? KeepAlivePingDelay;
        kestrel.Limits.Http2.KeepAlivePingTimeout = keepAlivePingTimeout ?? KeepAlivePingTimeout;
        kestrel.Limits.Http2.MaxStreamsPerConnection = maxStreamsPerConnection;
        kestrel.Limits.Http2.InitialStreamWindowSize = 8 << 20;
        kestrel.Limits.Http2.InitialConnectionWindowSize = 16 << 20;
        kestrel.AddServerHeader = false;
        kestrel.Listen(address, grpcPort, l => { l.Protocols = HttpProtocols.Http2; grpcBound?.Invoke(l); });
        kestrel.Listen(address, httpPort, l => { l.Protocols = HttpProtocols.Http1; httpBound?.Invoke(l); });
    }

    /// <summary>Grpc.AspNetCore with <see cref="ServerCallInterceptor"/> on every call, 16 MiB messages,
    /// server reflection and grpc.health.v1 answering <paramref name="ready"/>. The interceptor needs an
    /// <see cref="System.Diagnostics.ActivitySource"/> registered by the caller.</summary>
    public static IServiceCollection AddGrpcStack(this IServiceCollection services, Readiness ready)
    {
        services.AddSingleton(ready);
        services.AddGrpc(o =>
        {
            o.Interceptors.Add<ServerCallInterceptor>();
            o.MaxReceiveMessageSize = GrpcChannels.MaxMessageBytes;
            o.MaxSendMessageSize = GrpcChannels.MaxMessageBytes;
        });
        services.AddGrpcReflection();
        services.AddGrpcHealthChecks(o => o.UseHealthChecksCache = false)
            .AddCheck("ready", () => ready.IsReady ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy(ready.IsDraining ? "draining" : "loading"));
        return services;
    }

    /// <summary>Maps grpc.health.v1, reflection and /healthz; readiness drops when the app starts stopping.</summary>
    public static void MapGrpcStack(this WebApplication app)
    {
        var ready = app.Services.GetRequiredService<Readiness>();
        app.Lifetime.ApplicationStopping.Register(ready.StartDraining);
        app.MapGrpcHealthChecksService();
        app.MapGrpcReflectionService();
        app.MapGet("/healthz", () => ready.IsReady ? Results.Text("ok") : Results.Text("unhealthy", statusCode: StatusCodes.Status503ServiceUnavailable));
    }
}
