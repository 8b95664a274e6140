using Cluster.Rpc;
using Cluster.Rpc.Client;

namespace Cluster.Serving.Routing;

/// <summary>One worker the gateway can route to: its channel, calls in flight and health.</summary>
public sealed class Worker(Uri address, RpcChannel channel)
{
    private int _outstanding;

    public Uri Address { get; } = address;
    public RpcChannel Channel { get; } = channel;
    public int Outstanding => Volatile.Read(ref _outstanding);

    /// <summary>False after a failed health check or a transport failure, until a check passes again.</summary>
    public bool Healthy { get; internal set; } = true;

    internal void Enter() => Interlocked.Increment(ref _outstanding);
    internal void Leave() => Interlocked.Decrement(ref _outstanding);
}

/// <summary>
/// Workers of one role. <see cref="Acquire"/> picks the healthy worker with the fewest calls in
/// flight (least outstanding requests); a worker that fails a health check or a call with
/// UNAVAILABLE is taken out until <see cref="CheckHealthAsync"/> finds it answering again.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    private readonly Worker[] _workers;
    private int _roundRobin;

    public WorkerPool(string role, IEnumerable<Uri> addresses, RpcChannelOptions? options = null)
    {
        Role = role;
        _workers = addresses.Select(a => new Worker(a, new RpcChannel(a, options))).ToArray();
        if (_workers.Length == 0) throw new ArgumentException($"no {role} workers configured");
    }

    public string Role { get; }
    public IReadOnlyList<Worker> Workers => _workers;

    /// <summary>A lease on the least-loaded healthy worker; dispose it when the call ends. Throws
    /// UNAVAILABLE (fail fast, never queue) when no worker of this role is healthy.</summary>
    public WorkerLease Acquire(Uri? except = null)
    {
        // Ties go round-robin so that idle workers share the load.
        int start = Interlocked.Increment(ref _roundRobin);
        Worker? best = null;
        for (int i = 0; i < _workers.Length; i++)
        {
            var w = _workers[(int)((uint)(start + i) % _workers.Length)];
            if (!w.Healthy || w.Address == except) continue;
            if (best is null || w.Outstanding < best.Outstanding) best = w;
        }
        if (best is null) throw new RpcException(StatusCode.Unavailable, $"no healthy {Role} worker (of {_workers.Length} configured)");
        best.Enter();
        return new WorkerLease(best);
    }

    /// <summary>Marks a worker down after a transport failure so the next request goes elsewhere.</summary>
    public static void ReportFailure(Worker worker, RpcException e)
    {
        if (e.StatusCode is StatusCode.Unavailable) worker.Healthy = false;
    }

    /// <summary>Probes every worker with <paramref name="probe"/> and updates its health.</summary>
    public async Task CheckHealthAsync(Func<Worker, CancellationToken, Task> probe, TimeSpan timeout, CancellationToken ct)
    {
        await Task.WhenAll(_workers.Select(async w =>
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                await probe(w, cts.Token);
                w.Healthy = true;
            }
            catch (Exception e) when (e is RpcException or OperationCanceledException or HttpRequestException)
            {
                if (ct.IsCancellationRequested) throw;
                w.Healthy = false;
            }
        }));
    }

    public void Dispose()
    {
        foreach (var w in _workers) w.Channel.Dispose();
    }
}

/// <summary>A worker chosen for one call; disposing releases its slot.</summary>
public sealed class WorkerLease(Worker worker) : IDisposable
{
    private int _released;
    public Worker Worker { get; } = worker;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) Worker.Leave();
    }
}
