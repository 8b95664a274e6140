using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Trace;

namespace Cluster.Serving.Hosting;

/// <summary>What a service project supplies to <see cref="ServiceHost"/>: its gRPC services, its
/// readiness, and the meters it records into.</summary>
public interface IClusterService : IAsyncDisposable
{
    /// <summary>Maps the service's generated gRPC service(s), e.g. <c>endpoints.MapGrpcService&lt;GatewayService&gt;()</c>;
    /// the host registers this instance in the container, so the mapped type resolves to it.</summary>
    void MapGrpcServices(IEndpointRouteBuilder endpoints);

    /// <summary>Maps plain HTTP endpoints (the gateway's OpenAI-compatible API and playground); they are
    /// reached on the HTTP/1.1 port beside /healthz and /metrics.</summary>
    void MapHttpEndpoints(IEndpointRouteBuilder endpoints) { }

    /// <summary>grpc.health.v1 answers SERVING and /healthz 200 while true (false while loading or draining).</summary>
    bool IsReady { get; }

    /// <summary>OpenTelemetry meter names exported on /metrics.</summary>
    IReadOnlyList<string> MeterNames { get; }

    /// <summary>Adds the service's background work (hosted services) to its app.</summary>
    void ConfigureServices(IServiceCollection services) { }

    /// <summary>Adds what the service's own connections need to its tracer (the gateway's Redis).</summary>
    void ConfigureTracing(TracerProviderBuilder tracing) { }
}
