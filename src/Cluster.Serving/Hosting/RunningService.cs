using System.Net;
using Cluster.Telemetry;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Cluster.Serving.Hosting;

/// <summary>A started service; disposing stops it.</summary>
public sealed class RunningService : IAsyncDisposable
{
    private readonly ProcessMetrics _processMetrics;
    private readonly ServiceTracing _traces;
    private readonly ILoggerFactory _logging;
    private int _disposed;

    internal RunningService(WebApplication app, IClusterService service, ProcessMetrics processMetrics, ServiceTracing traces, ILoggerFactory logging)
    {
        App = app;
        Service = service;
        _processMetrics = processMetrics;
        _traces = traces;
        _logging = logging;
        // Listen order: gRPC first, then HTTP/1.1; the addresses hold the bound ports (port 0 resolved).
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .Select(a => new Uri(a)).ToArray();
        GrpcEndPoint = ToEndPoint(bound[0]);
        HttpEndPoint = ToEndPoint(bound[1]);
    }

    public WebApplication App { get; }
    public IClusterService Service { get; }

    /// <summary>The bound gRPC endpoint.</summary>
    public IPEndPoint GrpcEndPoint { get; }

    /// <summary>The bound HTTP/1.1 endpoint (/healthz, /metrics).</summary>
    public IPEndPoint HttpEndPoint { get; }

    /// <summary>The gRPC address clients use ("http://127.0.0.1:port"; a 0.0.0.0 bind is reached on loopback).</summary>
    public Uri GrpcAddress => new($"http://{(GrpcEndPoint.Address.Equals(IPAddress.Any) ? IPAddress.Loopback : GrpcEndPoint.Address)}:{GrpcEndPoint.Port}");

    private static IPEndPoint ToEndPoint(Uri u) => new(IPAddress.Parse(u.Host.Trim('[', ']')), u.Port);

    /// <summary>Stops the service (once; later calls do nothing, so a test may stop one early).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await App.StopAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
        }
        await App.DisposeAsync();
        await Service.DisposeAsync();
        _processMetrics.Dispose();
        _traces.Dispose();
        _logging.Dispose();
    }
}
