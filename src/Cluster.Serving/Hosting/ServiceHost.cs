using System.Net;
using Cluster.Serving.Routing;
using Cluster.Telemetry;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Trace;

namespace Cluster.Serving.Hosting;

/// <summary>
/// Runs one service as a plain ASP.NET Core app: its Grpc.AspNetCore services on an HTTP/2-only port
/// (Kestrel cannot serve cleartext HTTP/1.1 and HTTP/2 on one port: without TLS it falls back to
/// HTTP/1.1), with grpc.health.v1 and server reflection beside them, and /healthz plus /metrics on an
/// HTTP/1.1 port. Bad options end the process with one line and exit code 2.
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
        try
        {
            await using var running = await StartAsync(options, create, ServiceLogging.Parse(options.LogLevel));
            Console.WriteLine($"{role.Name()} serving gRPC on {running.GrpcAddress}, /healthz and /metrics on http://{running.HttpEndPoint}");
            // The console lifetime turns SIGTERM and Ctrl-C into "stopping".
            await running.App.WaitForShutdownAsync();
            return 0;
        }
        catch (Exception e) when (e is ArgumentException or FileNotFoundException or IOException or InvalidOperationException or Cluster.Engine.Loaders.ModelFormatException || StartupErrors.IsAddressInUse(e))
        {
            Console.Error.WriteLine($"error: {StartupErrors.Describe(e, options)}");
            return 2;
        }
    }

    /// <summary>Builds and starts a service (tests and `llmctl up` use this directly).</summary>
    /// <param name="tracing">Extra tracer configuration (tests add an in-memory exporter).</param>
    public static async Task<RunningService> StartAsync(ServiceOptions options, Factory create, LogLevel logLevel = LogLevel.Warning, Action<TracerProviderBuilder>? tracing = null)
    {
        // Before the service and Kestrel start their threads: glibc settings whose arenas give memory back
        // (NativeHeap.ConfigureForServices says why).
        NativeHeap.ConfigureForServices();
        // Lives as long as the service: the service and the trace-id logger write through it after start.
        var logging = LoggerFactory.Create(b => ServiceLogging.Configure(b.AddSimpleConsole(o => o.SingleLine = true), logLevel));
        var traces = new ServiceTracing(options.Role.Name(), options.OtlpEndpoint, logging.CreateLogger("Cluster.Tracing"));
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
        try
        {
            var app = Build(options, service, traces, logLevel, tracing);
            await app.StartAsync();
            return new RunningService(app, service, processMetrics, traces, logging);
        }
        catch
        {
            processMetrics.Dispose();
            await service.DisposeAsync();
            traces.Dispose();
            logging.Dispose();
            throw;
        }
    }

    private static WebApplication Build(ServiceOptions options, IClusterService service, ServiceTracing traces, LogLevel logLevel, Action<TracerProviderBuilder>? tracing)
    {
        var builder = WebApplication.CreateSlimBuilder();
        ServiceLogging.Configure(builder.Logging, logLevel);
        var address = IPAddress.Parse(options.Host);
        builder.WebHost.ConfigureKestrel(kestrel => GrpcStack.ConfigureKestrel(kestrel, address, options.GrpcPort, options.HttpPort));

        builder.Services.AddSingleton(service.GetType(), service);
        service.ConfigureServices(builder.Services);
        builder.Services.AddSingleton(traces.Source);
        builder.Services.AddGrpcStack(new Readiness(service));
        // Returns what a burst left committed once the service goes quiet (IdleMemoryTrim says why).
        builder.Services.AddHostedService(_ => new IdleMemoryTrim());
        builder.Services.AddServiceTelemetry(service.MeterNames, traces, b =>
        {
            service.ConfigureTracing(b);
            tracing?.Invoke(b);
        });

        var app = builder.Build();
        app.UseRequestArrival();
        app.UseMetricsEndpoint();
        service.MapGrpcServices(app);
        service.MapHttpEndpoints(app);
        app.MapGrpcStack();
        return app;
    }
}
