using System.Collections.Concurrent;
using System.Globalization;
using Cluster.Interop;
using Cluster.Rpc.Client;
using Cluster.Rpc.Hosting;
using Xunit;

namespace Cluster.Rpc.Tests.Client;

/// <summary>Channel behaviour that needs a server of its own: connection spreading, deadline propagation.</summary>
public sealed class ChannelTests : IAsyncLifetime
{
    private const int StreamLimit = 10;
    private static readonly Method<Empty, Empty> Slow = new(MethodType.Unary, "test.Channel", "Slow", Empty.Parser, Empty.Parser);
    private static readonly Method<Empty, Empty> ReportDeadline = new(MethodType.Unary, "test.Channel", "ReportDeadline", Empty.Parser, Empty.Parser);

    private readonly ConcurrentDictionary<int, bool> _clientPorts = new();
    private RpcServerHost _host = null!;

    public async Task InitializeAsync()
    {
        _host = RpcServerHost.Create(new RpcHostOptions { MaxStreamsPerConnection = StreamLimit }, (r, _) => r
            .AddUnary(Slow, async (_, context) =>
            {
                _clientPorts[context.HttpContext.Connection.RemotePort] = true;
                await Task.Delay(300, context.CancellationToken);
                return new Empty();
            })
            .AddUnary(ReportDeadline, (_, context) =>
            {
                // The remaining time as the server sees it, sent back as the status message.
                var ms = context.Deadline is { } d ? (d - DateTime.UtcNow).TotalMilliseconds : -1;
                throw new RpcException(new Status(StatusCode.FailedPrecondition, ms.ToString("F0", CultureInfo.InvariantCulture)));
            }));
        await _host.StartAsync();
    }

    public async Task DisposeAsync() => await _host.DisposeAsync();

    [Fact(Timeout = 60_000)]
    public async Task Calls_beyond_the_stream_limit_open_more_connections()
    {
        using var channel = new RpcChannel(_host.GrpcAddress);
        var calls = Enumerable.Range(0, 5 * StreamLimit).Select(_ => channel.UnaryAsync(Slow, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(30))));
        await Task.WhenAll(calls);
        // 50 calls in flight against 10 streams per connection: one connection would queue them.
        Assert.True(_clientPorts.Count >= 2, $"{_clientPorts.Count} connection(s) used");
    }

    [Fact(Timeout = 30_000)]
    public async Task Deadline_reaches_the_server_as_grpc_timeout()
    {
        using var channel = new RpcChannel(_host.GrpcAddress);
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(ReportDeadline, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(20))));
        var remaining = double.Parse(ex.Detail, CultureInfo.InvariantCulture);
        Assert.InRange(remaining, 10_000, 20_001);

        ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(ReportDeadline, new Empty()));
        Assert.Equal("-1", ex.Detail);
    }

    [Fact(Timeout = 30_000)]
    public async Task Expired_deadline_fails_without_sending()
    {
        using var channel = new RpcChannel(_host.GrpcAddress);
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(Slow, new Empty(), new CallOptions(Deadline: DateTime.UtcNow.AddSeconds(-1))));
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.Empty(_clientPorts);
    }
}
