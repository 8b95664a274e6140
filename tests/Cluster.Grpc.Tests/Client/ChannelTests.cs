using System.Collections.Concurrent;
using System.Globalization;
using Cluster.Grpc.Tests.Hosting;
using Cluster.Interop;
using Cluster.Serving.Routing;
using Cluster.Testing;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Cluster.Grpc.Tests.Client;

/// <summary>What a channel from <see cref="GrpcChannels"/> does on the wire: connection spreading, deadline propagation.</summary>
public sealed class ChannelTests : IAsyncLifetime
{
    private const int StreamLimit = 10;

    private readonly Probe _probe = new();
    private GrpcTestHost _host = null!;

    public async Task InitializeAsync() => _host = await GrpcTestHost.StartAsync(
        s => s.AddSingleton(_probe), app => app.MapGrpcService<Probe>(),
        new GrpcTestHostOptions { MaxStreamsPerConnection = StreamLimit });

    public async Task DisposeAsync() => await _host.DisposeAsync();

    [SkippableFact(Timeout = 60_000)]
    public async Task Calls_beyond_the_stream_limit_open_more_connections()
    {
        using var channel = GrpcChannels.Create(_host.GrpcAddress);
        var client = new ChannelProbe.ChannelProbeClient(channel);
        // One call first, so the client has the server's SETTINGS (its stream limit) before the burst:
        // streams sent on a fresh connection before they arrive are refused (REFUSED_STREAM), which
        // Grpc.Net.Client reports as UNAVAILABLE.
        await client.SlowAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(30));
        var calls = Enumerable.Range(0, 5 * StreamLimit).Select(_ => client.SlowAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(30)).ResponseAsync);
        await Task.WhenAll(calls);
        // 50 calls in flight against 10 streams per connection: one connection would queue them.
        Assert.True(_probe.ClientPorts.Count >= 2, $"{_probe.ClientPorts.Count} connection(s) used");
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Deadline_reaches_the_server_as_grpc_timeout()
    {
        using var channel = GrpcChannels.Create(_host.GrpcAddress);
        var client = new ChannelProbe.ChannelProbeClient(channel);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.ReportDeadlineAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(20)));
        var remaining = double.Parse(ex.Status.Detail, CultureInfo.InvariantCulture);
        Assert.InRange(remaining, 10_000, 20_001);

        ex = await Assert.ThrowsAsync<RpcException>(async () => await client.ReportDeadlineAsync(new Empty()));
        Assert.Equal("-1", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Expired_deadline_fails_without_sending()
    {
        using var channel = GrpcChannels.Create(_host.GrpcAddress);
        var client = new ChannelProbe.ChannelProbeClient(channel);
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.SlowAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(-1)));
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.Empty(_probe.ClientPorts);
    }

    private sealed class Probe : ChannelProbe.ChannelProbeBase
    {
        public ConcurrentDictionary<int, bool> ClientPorts { get; } = new();

        public override async Task<Empty> Slow(Empty request, ServerCallContext context)
        {
            ClientPorts[context.GetHttpContext().Connection.RemotePort] = true;
            await Task.Delay(300, context.CancellationToken);
            return new Empty();
        }

        public override Task<Empty> ReportDeadline(Empty request, ServerCallContext context)
        {
            // The remaining time as the server sees it, sent back as the status message. No deadline
            // arrives as DateTime.MaxValue.
            var ms = context.Deadline == DateTime.MaxValue ? -1 : (context.Deadline - DateTime.UtcNow).TotalMilliseconds;
            throw new RpcException(new Status(StatusCode.FailedPrecondition, ms.ToString("F0", CultureInfo.InvariantCulture)));
        }
    }
}
