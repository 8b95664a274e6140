using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Cluster.Telemetry;

/// <summary>
/// One service's OpenTelemetry wiring: its meters exported by the Prometheus exporter (scraped on the
/// HTTP/1.1 port only), and its traces from ASP.NET Core, Grpc.Net.Client and the service's own
/// <see cref="ServiceTracing.Source"/>. W3C trace context travels through the instrumentations
/// (ASP.NET Core reads `traceparent`, HttpClient writes it), with no propagation code of ours.
/// </summary>
public static class ServiceTelemetry
{
    public const string MetricsPath = "/metrics";

    /// <param name="meterNames">The service's meters (wildcards allowed).</param>
    /// <param name="tracing">The service's trace source and exporter; extra configuration (tests add an
    /// in-memory exporter, the gateway its Redis connection) goes through <paramref name="configureTracing"/>.</param>
    public static IServiceCollection AddServiceTelemetry(this IServiceCollection services, IEnumerable<string> meterNames, ServiceTracing tracing, Action<TracerProviderBuilder>? configureTracing = null)
    {
        services.AddOpenTelemetry()
            .WithMetrics(metrics => metrics
                .AddMeter([.. meterNames, ProcessMetrics.MeterName])
                .AddPrometheusExporter(o =>
                {
                    // A scrape must see the latest values (tests scrape right after a request); the
                    // dashboard reads neither the scope labels nor target_info.
                    o.ScrapeResponseCacheDurationMilliseconds = 0;
                    o.ScopeInfoEnabled = false;
                    o.TargetInfoEnabled = false;
                }))
            .WithTracing(traces =>
            {
                traces.AddAspNetCoreInstrumentation(o => o.Filter = http => !IsPlumbing(http.Request.Path))
                    .AddGrpcClientInstrumentation();
                tracing.Configure(traces);
                configureTracing?.Invoke(traces);
            });
        return services;
    }

    /// <summary>Serves GET /metrics on the HTTP/1.1 port only (the gRPC port speaks HTTP/2 alone, so the
    /// protocol tells the ports apart even when they were bound to port 0).</summary>
    public static IApplicationBuilder UseMetricsEndpoint(this IApplicationBuilder app) =>
        app.UseOpenTelemetryPrometheusScrapingEndpoint(http => http.Request.Path == MetricsPath && !HttpProtocol.IsHttp2(http.Request.Protocol));

    /// <summary>Health probes and scrapes run every few seconds: spans of them would bury the requests'.</summary>
    public static bool IsPlumbing(PathString path) =>
        path.StartsWithSegments("/grpc.health.v1.Health") || path.StartsWithSegments(MetricsPath) || path.StartsWithSegments("/healthz")
        || path.StartsWithSegments("/grpc.reflection.v1alpha.ServerReflection") || path.StartsWithSegments("/grpc.reflection.v1.ServerReflection");
}
