using Cluster.Rpc.Server;
using Cluster.Serving.Hosting;
using Microsoft.Extensions.Logging;

namespace Cluster.Gateway;

/// <summary>The gateway service (skeleton: its gRPC methods arrive with the cluster issue).</summary>
public sealed class GatewayService : IClusterService
{
    public const string MeterName = "LlmCluster.Gateway";

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging) =>
        Task.FromResult<IClusterService>(new GatewayService());

    public void Register(RpcServiceRegistry registry) { }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName];

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
