using Cluster.Grpc.Tests.Hosting;
using Cluster.Interop;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Routing;
using Cluster.Testing;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Cluster.Grpc.Tests.Server;

/// <summary>How handler outcomes become statuses (ServerCallInterceptor through StatusMapping), seen from our client.</summary>
public sealed class ErrorMappingTests : IAsyncLifetime
{
    private readonly CapturedLogs _logs = new();
    private GrpcTestHost _host = null!;
    private GrpcChannel _channel = null!;
    private Errors.ErrorsClient _client = null!;

    public async Task InitializeAsync()
    {
        // Errors are provoked on purpose here: captured, not printed.
        _host = await GrpcTestHost.StartAsync(_ => { }, app => app.MapGrpcService<FailingService>(),
            new GrpcTestHostOptions { Console = false, MinimumLogLevel = LogLevel.Debug, LogSink = _logs });
        _channel = GrpcChannels.Create(_host.GrpcAddress);
        _client = new Errors.ErrorsClient(_channel);
    }

    public async Task DisposeAsync()
    {
        _channel.Dispose();
        await _host.DisposeAsync();
    }

    private static DateTime In(double seconds) => DateTime.UtcNow.AddSeconds(seconds);

    [SkippableFact(Timeout = 30_000)]
    public async Task Unexpected_exception_is_internal_without_details_and_logged_as_an_error()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.CrashAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.DoesNotContain("secret", ex.Status.Detail);
        Assert.DoesNotContain("line", ex.Status.Detail);
        // The details go to the server log instead, at error level, with the exception.
        Assert.Contains(_logs.Entries, e => e.Level == LogLevel.Error && e.Exception?.Message.Contains("secret") == true && e.Message.Contains("Crash"));
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Exception_after_messages_is_internal_in_trailers()
    {
        using var call = _client.StreamCrash(new Empty(), deadline: In(10));
        var n = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) n++; });
        Assert.Equal(1, n);
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.DoesNotContain("boom", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Client_stream_writer_gets_the_status_of_a_server_that_stopped_early()
    {
        using var call = _client.StopsEarly(deadline: In(20));
        var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = Google.Protobuf.ByteString.CopyFrom(new byte[64 * 1024]) } };
        var written = 0;
        RpcException? writeFailure = null;
        try
        {
            // Far more than the flow-control windows hold: the writer must notice the call ended
            // rather than block (the test's timeout) or succeed.
            for (; written < 1000; written++) await call.RequestStream.WriteAsync(chunk);
            await call.RequestStream.CompleteAsync();
        }
        catch (RpcException e)
        {
            writeFailure = e;
        }
        Assert.True(writeFailure is not null, $"all {written} writes of 64 KiB succeeded after the server ended the call");
        // Grpc.Net.Client fails the write with the server's status when it has arrived, and with CANCELLED
        // when the write loses that race (the request stream is aborted first); the status itself is
        // always the response's.
        Assert.Contains(writeFailure.StatusCode, new[] { StatusCode.FailedPrecondition, StatusCode.Cancelled });
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Equal("enough", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Argument_exception_is_internal_an_engine_bug_not_the_clients_fault()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.BadArgumentAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.Internal, ex.StatusCode);
        Assert.DoesNotContain("max_tokens", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Invalid_request_is_invalid_argument_naming_the_field()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.InvalidRequestAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Contains("max_tokens", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Rpc_exception_keeps_code_message_and_trailers()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.RpcAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.NotFound, ex.StatusCode);
        Assert.Equal("no such session", ex.Status.Detail);
        Assert.Equal("s1", ex.Trailers.GetValue("session"));
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Full_kv_store_is_resource_exhausted()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.KvFullAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Contains("budget", ex.Status.Detail);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Unreachable_dependency_is_unavailable()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await _client.UnreachableAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    /// <summary>A handler that writes to a stream its client has cancelled gets an InvalidOperationException
    /// from gRPC; that is the cancellation, logged as one, not an unexpected failure at error level.</summary>
    [SkippableFact(Timeout = 30_000)]
    public async Task A_write_after_the_client_cancelled_is_logged_as_the_cancellation_not_as_an_error()
    {
        using var cts = new CancellationTokenSource();
        using var call = _client.WritesAfterCancel(new Empty(), deadline: In(10), cancellationToken: cts.Token);
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<Exception>(() => call.ResponseStream.MoveNext(CancellationToken.None));
        // Until the handler has ended (ASP.NET Core logs the request's end after the interceptor's entry).
        for (int i = 0; i < 100 && !_logs.Entries.Any(e => e.Message.StartsWith("Request finished", StringComparison.Ordinal) && e.Message.Contains("WritesAfterCancel")); i++) await Task.Delay(50);
        Assert.Contains(_logs.Entries, e => e.Message.Contains("WritesAfterCancel cancelled by the client"));
        Assert.DoesNotContain(_logs.Entries, e => e.Level >= LogLevel.Error && e.Message.Contains("WritesAfterCancel"));
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Server_reports_deadline_exceeded_even_if_handler_ignores_it()
    {
        // Raw request, so the status comes from the server and not from the client's own timer.
        using var http = RawHttp2.CreateClient();
        var result = await RawHttp2.SendAsync(http, _host.GrpcEndPoint.Port, "/test.Errors/IgnoresDeadline", RawHttp2.Frame([]), headers: [("grpc-timeout", "100m")]);
        Assert.Equal("4", result.GrpcStatus);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Unreachable_server_is_unavailable()
    {
        int port;
        await using (var other = await GrpcTestHost.StartAsync(_ => { }, _ => { }, new GrpcTestHostOptions { Console = false }))
            port = other.GrpcEndPoint.Port;
        using var channel = GrpcChannels.Create(new Uri($"http://127.0.0.1:{port}"));
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await new Errors.ErrorsClient(channel).CrashAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
    }

    [SkippableFact(Timeout = 60_000)]
    public async Task Many_concurrent_calls_complete()
    {
        var calls = Enumerable.Range(0, 500).Select(_ => _client.IgnoresDeadlineAsync(new Empty(), deadline: In(30)).ResponseAsync);
        var results = await Task.WhenAll(calls);
        Assert.Equal(500, results.Length);
    }

    /// <summary>Each method fails the way its name says; none translates its exception itself.</summary>
    private sealed class FailingService : Errors.ErrorsBase
    {
        public override Task<Empty> Crash(Empty request, ServerCallContext context) =>
            throw new InvalidOperationException("secret detail at C:\\src\\x.cs:line 42");

        public override Task<Empty> BadArgument(Empty request, ServerCallContext context) =>
            throw new ArgumentException("must be positive", "max_tokens");

        public override Task<Empty> InvalidRequest(Empty request, ServerCallContext context) =>
            throw new InvalidRequestException("max_tokens must be positive");

        public override Task<Empty> Rpc(Empty request, ServerCallContext context) =>
            throw new RpcException(new Status(StatusCode.NotFound, "no such session"), new Metadata { { "session", "s1" } });

        public override Task<Empty> KvFull(Empty request, ServerCallContext context) =>
            throw new KvStoreFullException("session s1 needs 10 MiB, the budget has 1 MiB left");

        public override Task<Empty> Unreachable(Empty request, ServerCallContext context) =>
            throw new HttpRequestException("connection refused (127.0.0.1:1)");

        public override async Task<Empty> IgnoresDeadline(Empty request, ServerCallContext context)
        {
            await Task.Delay(500);
            return new Empty();
        }

        public override async Task StreamCrash(Empty request, IServerStreamWriter<Empty> stream, ServerCallContext context)
        {
            await stream.WriteAsync(new Empty());
            throw new InvalidOperationException("boom");
        }

        public override async Task WritesAfterCancel(Empty request, IServerStreamWriter<Empty> stream, ServerCallContext context)
        {
            await stream.WriteAsync(new Empty());
            await Task.Delay(Timeout.Infinite, context.CancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
            await Task.Delay(100); // the request completes
            await stream.WriteAsync(new Empty());
        }

        public override async Task<StreamingInputCallResponse> StopsEarly(IAsyncStreamReader<StreamingInputCallRequest> requests, ServerCallContext context)
        {
            await foreach (var _ in requests.ReadAllAsync()) throw new RpcException(new Status(StatusCode.FailedPrecondition, "enough"));
            return new StreamingInputCallResponse();
        }
    }
}
