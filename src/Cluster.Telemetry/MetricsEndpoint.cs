using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Cluster.Telemetry;

public static class MetricsEndpoint
{
    /// <summary>The Prometheus text exposition content type (format 0.0.4).</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Serves GET /metrics from <paramref name="registry"/> (on the HTTP/1.1 port Prometheus scrapes).</summary>
    public static IEndpointConventionBuilder MapPrometheusMetrics(this IEndpointRouteBuilder endpoints, MetricsRegistry registry, string path = "/metrics") =>
        endpoints.MapGet(path, () => Results.Text(registry.Scrape(), ContentType));
}
