using Cluster.Serving.Routing;
using Grpc.Core;
using Grpc.Health.V1;
using Microsoft.Extensions.Hosting;

namespace Cluster.Gateway;

/// <summary>
/// Takes workers that stop answering the standard health check (grpc.health.v1 Check: SERVING) out of
/// rotation and puts them back when they answer again; also re-resolves worker host names. Runs as a
/// hosted service of the gateway's app, every 2 s.
/// </summary>
internal sealed class WorkerHealthMonitor(params WorkerPool[] pools) : BackgroundService
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(2);

    protected override async Task ExecuteAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try
            {
                foreach (var pool in pools) await pool.RefreshAsync(ct);
                foreach (var pool in pools) await pool.CheckHealthAsync(ProbeAsync, ProbeTimeout, ct);
                await Task.Delay(Interval, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
            }
        }
    }

    private static async Task ProbeAsync(Worker worker, CancellationToken ct)
    {
        var reply = await new Health.HealthClient(worker.Channel).CheckAsync(new HealthCheckRequest(), cancellationToken: ct);
        if (reply.Status != HealthCheckResponse.Types.ServingStatus.Serving) throw new RpcException(new Status(StatusCode.Unavailable, "not serving"));
    }
}
