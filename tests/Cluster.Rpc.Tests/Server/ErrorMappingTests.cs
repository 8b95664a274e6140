using Cluster.Interop;
using Cluster.Rpc.Client;
using Cluster.Rpc.Hosting;
using Cluster.Rpc.Server;
using Xunit;

namespace Cluster.Rpc.Tests.Server;

/// <summary>How handler outcomes become statuses (ServerCallHandler.ToStatus), seen from our client.</summary>
public sealed class ErrorMappingTests : IAsyncLifetime
{
    private static readonly Method<Empty, Empty> Crash = new(MethodType.Unary, "test.Errors", "Crash", Empty.Parser, Empty.Parser);
    private static readonly Method<Empty, Empty> BadArgument = new(MethodType.Unary, "test.Errors", "BadArgument", Empty.Parser, Empty.Parser);
    private static readonly Method<Empty, Empty> Rpc = new(MethodType.Unary, "test.Errors", "Rpc", Empty.Parser, Empty.Parser);
    private static readonly Method<Empty, Empty> IgnoresDeadline = new(MethodType.Unary, "test.Errors", "IgnoresDeadline", Empty.Parser, Empty.Parser);
    private static readonly Method<Empty, Empty> StreamCrash = new(MethodType.ServerStreaming, "test.Errors", "StreamCrash", Empty.Parser, Empty.Parser);

    private static readonly Method<StreamingInputCallRequest, StreamingInputCallResponse> StopsEarly = new(MethodType.ClientStreaming, "test.Errors", "StopsEarly", StreamingInputCallRequest.Parser, StreamingInputCallResponse.Parser);

    private RpcServerHost _host = null!;
    private RpcChannel _channel = null!;

    public async Task InitializeAsync()
    {
        _host = RpcServerHost.Create(new RpcHostOptions { MinimumLogLevel = Microsoft.Extensions.Logging.LogLevel.None }, (r, _) => r
            .AddUnary(Crash, (_, _) => throw new InvalidOperationException("secret detail at C:\\src\\x.cs:line 42"))
            .AddUnary(BadArgument, (_, _) => throw new ArgumentException("must be positive", "max_tokens"))
            .AddUnary(Rpc, (_, _) => throw new RpcException(new Status(StatusCode.NotFound, "no such session", new Metadata().Add("session", "s1"))))
            .AddUnary(IgnoresDeadline, async (_, _) => { await Task.Delay(500); return new Empty(); })
            .AddClientStreaming(StopsEarly, async (requests, _) =>
            {
                await foreach (var request in requests) throw new RpcException(new Status(StatusCode.FailedPrecondition, "enough"));
                return new StreamingInputCallResponse();
            })
            .AddServerStreaming(StreamCrash, async (_, stream, _) =>
            {
                await stream.WriteAsync(new Empty());
                throw new InvalidOperationException("boom");
            }));
        await _host.StartAsync();
        _channel = new RpcChannel(_host.GrpcAddress);
    }

    public async Task DisposeAsync()
    {
        _channel.Dispose();
        await _host.DisposeAsync();
    }

    [Fact(Timeout = 30_000)]
    public async Task Unexpected_exception_is_internal_without_details()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => _channel.UnaryAsync(Crash, new Empty()));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.DoesNotContain("secret", ex.Detail);
        Assert.DoesNotContain("line", ex.Detail);
    }

    [Fact(Timeout = 30_000)]
    public async Task Exception_after_messages_is_internal_in_trailers()
    {
        using var call = _channel.ServerStreaming(StreamCrash, new Empty());
        var n = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ReadAllAsync()) n++; });
        Assert.Equal(1, n);
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.DoesNotContain("boom", ex.Detail);
    }

    [Fact(Timeout = 30_000)]
    public async Task Client_stream_writer_gets_the_status_of_a_server_that_stopped_early()
    {
        using var call = _channel.ClientStreaming(StopsEarly, CallOptions.WithTimeout(TimeSpan.FromSeconds(20)));
        var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = Google.Protobuf.ByteString.CopyFrom(new byte[64 * 1024]) } };
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            // Far more than the flow-control windows hold: the writer must notice the call ended.
            for (var i = 0; i < 1000; i++) await call.WriteAsync(chunk);
            await call.CompleteAsync();
            await call.ResponseAsync;
        });
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Equal("enough", ex.Detail);
    }

    [Fact(Timeout = 30_000)]
    public async Task Argument_exception_is_invalid_argument_naming_the_parameter()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => _channel.UnaryAsync(BadArgument, new Empty()));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains("max_tokens", ex.Detail);
    }

    [Fact(Timeout = 30_000)]
    public async Task Rpc_exception_keeps_code_message_and_trailers()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => _channel.UnaryAsync(Rpc, new Empty()));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        Assert.Equal("no such session", ex.Detail);
        Assert.Equal("s1", ex.Trailers.GetValue("session"));
    }

    [Fact(Timeout = 30_000)]
    public async Task Server_reports_deadline_exceeded_even_if_handler_ignores_it()
    {
        // Raw request, so the status comes from the server and not from the client's own timer.
        using var http = Server.RawHttp2.CreateClient();
        var result = await Server.RawHttp2.SendAsync(http, _host.GrpcEndPoint.Port, IgnoresDeadline.FullName, Server.RawHttp2.Frame([]), headers: [("grpc-timeout", "100m")]);
        Assert.Equal("4", result.GrpcStatus);
    }

    [Fact(Timeout = 30_000)]
    public async Task Unreachable_server_is_unavailable()
    {
        var port = _host.GrpcEndPoint.Port;
        await using (var other = RpcServerHost.Create(new RpcHostOptions(), (_, _) => { }))
        {
            await other.StartAsync();
            port = other.GrpcEndPoint.Port;
        }
        using var channel = new RpcChannel(new Uri($"http://127.0.0.1:{port}"));
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(Crash, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    [Fact(Timeout = 60_000)]
    public async Task Many_concurrent_calls_complete()
    {
        var calls = Enumerable.Range(0, 500).Select(_ => _channel.UnaryAsync(IgnoresDeadline, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(30))));
        var results = await Task.WhenAll(calls);
        Assert.Equal(500, results.Length);
    }
}
