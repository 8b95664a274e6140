using Cluster.Rpc.Server;
using Cluster.Serving.Hosting;
using Microsoft.Extensions.Logging;

namespace Cluster.Prefill;

/// <summary>The prefill service (skeleton: its gRPC methods arrive with the cluster issue).</summary>
public sealed class PrefillService : IClusterService
{
    public const string MeterName = "LlmCluster.Prefill";

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging) =>
        Task.FromResult<IClusterService>(new PrefillService());

    public void Register(RpcServiceRegistry registry) { }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName];

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
