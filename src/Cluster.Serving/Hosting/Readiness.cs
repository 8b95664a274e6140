namespace Cluster.Serving.Hosting;

/// <summary>
/// Whether a service takes new work: the service's own answer (false while loading) and false from the
/// moment it starts draining on SIGTERM, so load balancers and the gateway's health probes route new
/// calls elsewhere while the calls in flight finish. grpc.health.v1 and /healthz both read it.
/// </summary>
public sealed class Readiness(IClusterService service)
{
    private volatile bool _draining;

    public bool IsReady => !_draining && service.IsReady;

    public bool IsDraining => _draining;

    public void StartDraining() => _draining = true;
}
