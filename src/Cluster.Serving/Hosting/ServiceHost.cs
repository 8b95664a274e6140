using System.Net;
using Cluster.Rpc.Hosting;
using Cluster.Telemetry;
using Microsoft.Extensions.Logging;

namespace Cluster.Serving.Hosting;

/// <summary>
/// Runs one service: parses its options, builds it, and serves gRPC plus /healthz and /metrics on
/// the two ports until stopped. Bad options end the process with one line and exit code 2.
/// </summary>
public static class ServiceHost
{
    public delegate Task<IClusterService> Factory(ServiceOptions options, ILoggerFactory logging);

    /// <summary>The entry point of a service executable (and of `llmctl serve`).</summary>
    public static async Task<int> RunAsync(ServiceRole role, string[] args, Factory create)
    {
        ServiceOptions options;
        try
        {
            options = ServiceOptions.Parse(role, args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        using var stop = new CancellationTokenSource();
        try
        {
            await using var running = await StartAsync(options, create, LogLevel.Information);
            // The web host's console lifetime turns SIGTERM and Ctrl-C into "stopping" (and cancels the
            // default termination): follow it, or the process would wait forever after shutting down.
            using var stopping = running.Host.App.Lifetime.ApplicationStopping.Register(stop.Cancel);
            Console.WriteLine($"{role.Name()} serving gRPC on {running.GrpcAddress}, /healthz and /metrics on http://{running.Host.HttpEndPoint}");
            await Task.Delay(Timeout.Infinite, stop.Token).ContinueWith(_ => { });
            return 0;
        }
        catch (Exception e) when (e is ArgumentException or FileNotFoundException or IOException or InvalidOperationException or Cluster.Engine.Loaders.ModelFormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    /// <summary>Builds and starts a service (tests and `llmctl up` use this directly).</summary>
    /// <param name="tracing">Extra tracer configuration (tests add an in-memory exporter).</param>
    public static async Task<RunningService> StartAsync(ServiceOptions options, Factory create, LogLevel logLevel = LogLevel.Warning, Action<OpenTelemetry.Trace.TracerProviderBuilder>? tracing = null)
    {
        // Lives as long as the service: the trace-id logger writes through it after start.
        var logging = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(logLevel));
        var traces = new ServiceTracing(options.Role.Name(), options.OtlpEndpoint, logging.CreateLogger("Cluster.Tracing"), tracing);
        IClusterService service;
        try
        {
            service = await create(options, logging);
        }
        catch
        {
            traces.Dispose();
            logging.Dispose();
            throw;
        }
        var processMetrics = new ProcessMetrics(options.Role.Name());
        var metrics = new MetricsRegistry([.. service.MeterNames, ProcessMetrics.MeterName]);
        var address = IPAddress.Parse(options.Host);
        var host = RpcServerHost.Create(new RpcHostOptions
        {
            GrpcEndPoint = new IPEndPoint(address, options.GrpcPort),
            HttpEndPoint = new IPEndPoint(address, options.HttpPort),
            IsHealthy = () => service.IsReady,
            MapHttpEndpoints = endpoints => endpoints.MapPrometheusMetrics(metrics),
            MinimumLogLevel = logLevel,
            Server = { ActivitySource = traces.Source },
        }, (registry, _) =>
        {
            service.Register(registry);
            registry.AddUnary(LlmCluster.V1.HealthMethods.Check, (_, _) => Task.FromResult(new Grpc.Health.V1.HealthCheckResponse
            {
                Status = service.IsReady ? Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving : Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing,
            }));
        });
        await host.StartAsync();
        return new RunningService(host, service, metrics, processMetrics, traces, logging);
    }
}

/// <summary>A started service; disposing stops it.</summary>
public sealed class RunningService(RpcServerHost host, IClusterService service, MetricsRegistry metrics, ProcessMetrics processMetrics, ServiceTracing traces, ILoggerFactory logging) : IAsyncDisposable
{
    public RpcServerHost Host { get; } = host;
    public IClusterService Service { get; } = service;
    public MetricsRegistry Metrics { get; } = metrics;

    /// <summary>The gRPC address clients use ("http://127.0.0.1:port"; a 0.0.0.0 bind is reached on loopback).</summary>
    public Uri GrpcAddress => new($"http://{(Host.GrpcEndPoint.Address.Equals(IPAddress.Any) ? IPAddress.Loopback : Host.GrpcEndPoint.Address)}:{Host.GrpcEndPoint.Port}");

    private int _disposed;

    /// <summary>Stops the service (once; later calls do nothing, so a test may stop one early).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        await Host.DisposeAsync();
        await Service.DisposeAsync();
        Metrics.Dispose();
        processMetrics.Dispose();
        traces.Dispose();
        logging.Dispose();
    }
}
