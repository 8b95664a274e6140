using System.Diagnostics;
using System.Net;
using Cluster.Serving.Hosting;
using Cluster.Serving.Routing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;

namespace Cluster.Grpc.Tests.Hosting;

/// <summary>
/// Hosts any gRPC services the way <see cref="ServiceHost"/> hosts a cluster service, so the tests (and
/// bench/grpc) exercise the stack the services run on: the same Kestrel limits, an HTTP/2-only gRPC port
/// and an HTTP/1.1 port with /healthz, <see cref="ServerCallInterceptor"/> on every call, 16 MiB
/// messages, server reflection and grpc.health.v1, all from <see cref="GrpcStack"/> as ServiceHost
/// takes them (ServiceHost itself only builds an IClusterService, with telemetry and a model behind it).
/// </summary>
public sealed class GrpcTestHost : IAsyncDisposable
{
    /// <summary>The interceptor's span source; tests have no exporter, so spans go nowhere.</summary>
    private static readonly ActivitySource Source = new("Cluster.Grpc.Tests");

    private readonly WebApplication _app;
    private readonly ListenOptions _grpc;
    private readonly ListenOptions _http;

    private GrpcTestHost(WebApplication app, ListenOptions grpc, ListenOptions http)
    {
        _app = app;
        _grpc = grpc;
        _http = http;
    }

    /// <summary>The bound gRPC (HTTP/2) endpoint; Kestrel fills in the port it picked for port 0.</summary>
    public IPEndPoint GrpcEndPoint => _grpc.IPEndPoint!;

    public IPEndPoint HttpEndPoint => _http.IPEndPoint!;

    public Uri GrpcAddress => new($"http://127.0.0.1:{GrpcEndPoint.Port}");

    public IServiceProvider Services => _app.Services;

    /// <param name="services">Registers the gRPC service instances (a singleton registered here is the one
    /// Grpc.AspNetCore calls, so a fixture can keep a reference to it).</param>
    /// <param name="map">Maps the gRPC services (MapGrpcService&lt;T&gt;).</param>
    public static async Task<GrpcTestHost> StartAsync(Action<IServiceCollection> services, Action<IEndpointRouteBuilder> map, GrpcTestHostOptions? options = null)
    {
        options ??= new GrpcTestHostOptions();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        if (options.Console) builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        if (options.LogSink is { } sink) builder.Logging.AddProvider(sink);

        ListenOptions grpc = null!, http = null!;
        builder.WebHost.ConfigureKestrel(kestrel =>
            GrpcStack.ConfigureKestrel(kestrel, IPAddress.Loopback, options.GrpcPort, 0, options.MaxStreamsPerConnection, l => grpc = l, l => http = l,
                options.KeepAlivePingDelay, options.KeepAlivePingTimeout));
        builder.Services.AddSingleton(Source);
        builder.Services.AddGrpcStack(new Readiness(() => true));
        services(builder.Services);

        var app = builder.Build();
        map(app);
        app.MapGrpcStack();
        await app.StartAsync();
        return new GrpcTestHost(app, grpc, http);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>What a test may vary; everything else is as in ServiceHost.</summary>
public sealed record GrpcTestHostOptions
{
    /// <summary>ServiceHost's value; channel tests lower it to see connections multiply.</summary>
    public int MaxStreamsPerConnection { get; init; } = 1000;

    /// <summary>The gRPC port; 0 lets the OS pick one.</summary>
    public int GrpcPort { get; init; }

    /// <summary>The server's HTTP/2 keep-alive PING delay and timeout; null: ServiceHost's (GrpcStack).</summary>
    public TimeSpan? KeepAlivePingDelay { get; init; }

    public TimeSpan? KeepAlivePingTimeout { get; init; }

    public LogLevel MinimumLogLevel { get; init; } = LogLevel.Warning;

    /// <summary>Log to the console (off where a test provokes errors on purpose).</summary>
    public bool Console { get; init; } = true;

    /// <summary>An extra logger provider, for tests that check what the server logged.</summary>
    public ILoggerProvider? LogSink { get; init; }
}
