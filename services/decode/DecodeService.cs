using Cluster.Rpc.Server;
using Cluster.Serving.Hosting;
using Microsoft.Extensions.Logging;

namespace Cluster.Decode;

/// <summary>The decode service (skeleton: its gRPC methods arrive with the cluster issue).</summary>
public sealed class DecodeService : IClusterService
{
    public const string MeterName = "LlmCluster.Decode";

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging) =>
        Task.FromResult<IClusterService>(new DecodeService());

    public void Register(RpcServiceRegistry registry) { }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName];

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
