using Grpc.Core;
using Cluster.Serving.Routing;
using Xunit;

namespace Cluster.IntegrationTests;

public sealed class WorkerPoolTests
{
    private static WorkerPool Pool(int n) => new("decode", Enumerable.Range(1, n).Select(i => new Uri($"http://127.0.0.1:{40000 + i}")));

    [Fact]
    public void Calls_go_to_the_worker_with_the_fewest_in_flight()
    {
        using var pool = Pool(3);
        var leases = Enumerable.Range(0, 6).Select(_ => pool.Acquire()).ToList();
        Assert.All(pool.Workers, w => Assert.Equal(2, w.Outstanding));
        leases.First(l => l.Worker == pool.Workers[1]).Dispose();
        using var next = pool.Acquire();
        Assert.Same(pool.Workers[1], next.Worker);
        foreach (var l in leases) l.Dispose();
    }

    [Fact]
    public void A_failed_worker_leaves_the_rotation_and_none_left_fails_fast()
    {
        using var pool = Pool(2);
        using (var a = pool.Acquire()) WorkerPool.ReportFailure(a.Worker, new RpcException(new Status(StatusCode.Unavailable, "gone")));
        var down = pool.Workers.Single(w => !w.Healthy);
        for (int i = 0; i < 5; i++)
            using (var l = pool.Acquire()) Assert.NotSame(down, l.Worker);
        var up = pool.Workers.Single(w => w.Healthy);
        var e = Assert.Throws<RpcException>(() => pool.Acquire(except: up.Address));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.Contains("no healthy decode worker", e.Message);
    }

    [Fact]
    public void A_request_verdict_does_not_take_a_worker_out()
    {
        using var pool = Pool(1);
        using (var l = pool.Acquire()) WorkerPool.ReportFailure(l.Worker, new RpcException(new Status(StatusCode.InvalidArgument, "bad prompt")));
        Assert.True(pool.Workers[0].Healthy);
    }
}
