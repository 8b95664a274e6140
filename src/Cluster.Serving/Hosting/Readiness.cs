namespace Cluster.Serving.Hosting;

/// <summary>
/// Whether a service takes new work: its own answer (false while loading) and false from the moment
/// it starts draining on SIGTERM, so load balancers and the gateway's health probes route new calls
/// elsewhere while the calls in flight finish. grpc.health.v1 and /healthz both read it.
/// </summary>
public sealed class Readiness(Func<bool> isReady)
{
    private volatile bool _draining;

    public Readiness(IClusterService service) : this(() => service.IsReady) { }

    public bool IsReady => !_draining && isReady();

    public bool IsDraining => _draining;

    public void StartDraining() => _draining = true;
}
