using Cluster.Rpc.Server;
using Cluster.Serving.Hosting;
using Microsoft.Extensions.Logging;

namespace Cluster.CacheManager;

/// <summary>The cachemanager service (skeleton: its gRPC methods arrive with the cluster issue).</summary>
public sealed class CacheManagerService : IClusterService
{
    public const string MeterName = "LlmCluster.CacheManager";

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging) =>
        Task.FromResult<IClusterService>(new CacheManagerService());

    public void Register(RpcServiceRegistry registry) { }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName];

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
