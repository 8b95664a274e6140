using Cluster.Rpc.Server;

namespace Cluster.Serving.Hosting;

/// <summary>What a service project supplies to <see cref="ServiceHost"/>: its gRPC methods, its
/// readiness, and the meters it records into.</summary>
public interface IClusterService : IAsyncDisposable
{
    void Register(RpcServiceRegistry registry);

    /// <summary>/healthz answers 200 while true.</summary>
    bool IsReady { get; }

    /// <summary>OpenTelemetry meter names exported on /metrics.</summary>
    IReadOnlyList<string> MeterNames { get; }
}
