using Cluster.Tests;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cluster.Telemetry.Tests;

/// <summary>A minimal ASP.NET Core app wired as every service is (<see cref="ServiceTelemetry"/>): an
/// HTTP/1.1 port that serves /metrics, and an HTTP/2-only port that must not.</summary>
internal sealed class TelemetryApp : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServiceTracing _tracing;

    private TelemetryApp(WebApplication app, ServiceTracing tracing, int httpPort, int grpcPort)
    {
        _app = app;
        _tracing = tracing;
        HttpPort = httpPort;
        GrpcPort = grpcPort;
    }

    public int HttpPort { get; }
    public int GrpcPort { get; }

    public static async Task<TelemetryApp> StartAsync(params string[] meterNames)
    {
        int http = FreePorts.Next(), grpc = FreePorts.Next();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.ListenLocalhost(grpc, l => l.Protocols = HttpProtocols.Http2);
            k.ListenLocalhost(http, l => l.Protocols = HttpProtocols.Http1);
        });
        var tracing = new ServiceTracing("test", null, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        builder.Services.AddServiceTelemetry(meterNames, tracing);
        var app = builder.Build();
        app.UseMetricsEndpoint();
        await app.StartAsync();
        return new TelemetryApp(app, tracing, http, grpc);
    }

    public async Task<string> ScrapeAsync()
    {
        using var http = new HttpClient();
        return await http.GetStringAsync($"http://127.0.0.1:{HttpPort}/metrics");
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        _tracing.Dispose();
    }
}
