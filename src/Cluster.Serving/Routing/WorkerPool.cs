using System.Net;
using Grpc.Core;
using Grpc.Net.Client;

namespace Cluster.Serving.Routing;

/// <summary>One worker the gateway can route to: its channel, calls in flight and health.</summary>
public sealed class Worker(Uri address, GrpcChannel channel)
{
    private int _outstanding;

    public Uri Address { get; } = address;
    public GrpcChannel Channel { get; } = channel;
    public int Outstanding => Volatile.Read(ref _outstanding);

    /// <summary>False after two failed health checks in a row or a transport failure, until a check passes again.</summary>
    public bool Healthy { get; internal set; } = true;

    /// <summary>Health checks failed in a row: one slow probe on a busy machine must not take a worker out.</summary>
    internal int FailedChecks { get; set; }

    internal void Enter() => Interlocked.Increment(ref _outstanding);
    internal void Leave() => Interlocked.Decrement(ref _outstanding);
}

/// <summary>
/// Workers of one role. <see cref="Acquire"/> picks the healthy worker with the fewest calls in
/// flight (least outstanding requests); a worker that fails a health check or a call with
/// UNAVAILABLE is taken out until <see cref="CheckHealthAsync"/> finds it answering again. A
/// configured host name (e.g. a Kubernetes headless Service) stands for every address it resolves
/// to, re-resolved by <see cref="RefreshAsync"/>: a gRPC client keeps its HTTP/2 connections, so one
/// name behind one connection pool would pin every call to a single worker.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    private readonly Uri[] _configured;
    private readonly TimeSpan? _connectTimeout;
    private readonly Dictionary<Uri, Worker> _all = [];
    private volatile Worker[] _workers;
    private int _roundRobin;

    public WorkerPool(string role, IEnumerable<Uri> addresses, TimeSpan? connectTimeout = null)
    {
        Role = role;
        _connectTimeout = connectTimeout;
        _configured = addresses.ToArray();
        if (_configured.Length == 0) throw new ArgumentException($"no {role} workers configured");
        _workers = _configured.Select(Get).ToArray();
    }

    public string Role { get; }
    public IReadOnlyList<Worker> Workers => _workers;

    /// <summary>Re-resolves configured host names; workers whose address disappeared leave the rotation.</summary>
    public async Task RefreshAsync(CancellationToken ct)
    {
        var next = new List<Worker>();
        foreach (var uri in _configured)
        {
            if (uri.HostNameType != UriHostNameType.Dns || uri.IsLoopback)
            {
                next.Add(Get(uri));
                continue;
            }
            try
            {
                var ips = await Dns.GetHostAddressesAsync(uri.DnsSafeHost, ct);
                next.AddRange(ips.Select(ip => Get(new UriBuilder(uri) { Host = ip.ToString() }.Uri)));
            }
            catch (System.Net.Sockets.SocketException)
            {
                next.AddRange(_workers.Where(w => w.Address.Port == uri.Port)); // keep what we had until DNS answers
            }
        }
        if (next.Count > 0) _workers = next.Distinct().ToArray();
    }

    private Worker Get(Uri address)
    {
        lock (_all)
        {
            if (!_all.TryGetValue(address, out var w)) _all[address] = w = new Worker(address, GrpcChannels.Create(address, _connectTimeout));
            return w;
        }
    }

    /// <summary>A lease on the least-loaded healthy worker; dispose it when the call ends. Throws
    /// UNAVAILABLE (fail fast, never queue) when no worker of this role is healthy.</summary>
    /// <param name="prefer">"host:port" of the worker to take whatever its load when it is healthy
    /// (KV-aware routing: it holds the request's KV).</param>
    public WorkerLease Acquire(Uri? except = null, string? prefer = null)
    {
        var workers = _workers;
        if (prefer is not null && workers.FirstOrDefault(w => w.Healthy && w.Address != except && w.Address.Authority == prefer) is { } holder)
        {
            holder.Enter();
            return new WorkerLease(holder);
        }
        // Ties go round-robin so that idle workers share the load.
        int start = Interlocked.Increment(ref _roundRobin);
        Worker? best = null;
        for (int i = 0; i < workers.Length; i++)
        {
            var w = workers[(int)((uint)(start + i) % workers.Length)];
            if (!w.Healthy || w.Address == except) continue;
            if (best is null || w.Outstanding < best.Outstanding) best = w;
        }
        if (best is null) throw new RpcException(new Status(StatusCode.Unavailable, $"no healthy {Role} worker (of {workers.Length} known)"));
        best.Enter();
        return new WorkerLease(best);
    }

    /// <summary>Whether a healthy worker other than <paramref name="except"/> is known.</summary>
    public bool HasHealthy(Uri except) => _workers.Any(w => w.Healthy && w.Address != except);

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
                w.FailedChecks = 0;
                w.Healthy = true;
            }
            catch (Exception e) when (e is RpcException or OperationCanceledException or HttpRequestException)
            {
                if (ct.IsCancellationRequested) throw;
                if (++w.FailedChecks >= 2) w.Healthy = false;
            }
        }));
    }

    public void Dispose()
    {
        lock (_all)
            foreach (var w in _all.Values) w.Channel.Dispose();
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
