using Cluster.Interop;
using Cluster.Rpc.Client;
using Google.Protobuf;
using Xunit;

namespace Cluster.Rpc.Tests.Interop;

/// <summary>
/// The interop cases as our client runs them, against any TestService server (ours or
/// grpcio's). Names follow doc/interop-test-descriptions.md where a standard case fits.
/// </summary>
public static class ClientCases
{
    public const string SpecialMessage = "\t\ntest with whitespace\r\nand Unicode BMP \u263A and non-BMP \U0001F608\t\n";

    public static readonly string[] Names =
    [
        "empty_unary", "large_unary", "custom_metadata", "status_code_and_message", "special_status_message",
        "server_streaming_10k", "server_streaming_64mib", "client_streaming_64mib",
        "error_before_messages", "error_after_messages", "timeout_on_sleeping_server", "deadline_mid_stream",
        "cancel_after_first_response", "unimplemented_method",
    ];

    public static async Task RunAllAsync(RpcChannel channel, InteropService service)
    {
        foreach (var name in Names) await RunAsync(name, channel, service.CancelledAsync);
    }

    /// <param name="cancelledSeen">Completes when the server saw the call with that call-id cancelled.</param>
    public static Task RunAsync(string name, RpcChannel channel, Func<string, Task> cancelledSeen) => name switch
    {
        "empty_unary" => EmptyUnary(channel),
        "large_unary" => LargeUnary(channel),
        "custom_metadata" => CustomMetadata(channel),
        "status_code_and_message" => StatusCodeAndMessage(channel, "test status message"),
        "special_status_message" => StatusCodeAndMessage(channel, SpecialMessage),
        "server_streaming_10k" => ServerStreaming(channel, 10_000, 8),
        "server_streaming_64mib" => ServerStreaming(channel, 64, 1 << 20),
        "client_streaming_64mib" => ClientStreaming(channel, 64, 1 << 20),
        "error_before_messages" => ErrorInStream(channel, 0),
        "error_after_messages" => ErrorInStream(channel, 5),
        "timeout_on_sleeping_server" => Timeout(channel),
        "deadline_mid_stream" => DeadlineMidStream(channel),
        "cancel_after_first_response" => CancelAfterFirstResponse(channel, cancelledSeen),
        "unimplemented_method" => Unimplemented(channel),
        _ => throw new ArgumentException($"unknown case {name}", nameof(name)),
    };

    private static async Task EmptyUnary(RpcChannel channel)
    {
        var response = await channel.UnaryAsync(TestServiceMethods.EmptyCall, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(10)));
        Assert.NotNull(response);
    }

    private static async Task LargeUnary(RpcChannel channel)
    {
        var request = new SimpleRequest { ResponseSize = 314159, Payload = new Payload { Body = ByteString.CopyFrom(new byte[271828]) } };
        var response = await channel.UnaryAsync(TestServiceMethods.UnaryCall, request, CallOptions.WithTimeout(TimeSpan.FromSeconds(10)));
        Assert.Equal(314159, response.Payload.Body.Length);
        Assert.Equal(271828, response.ReceivedSize);
        Assert.Equal(InteropService.MakeBody(314159, 0), response.Payload.Body);
    }

    private static async Task CustomMetadata(RpcChannel channel)
    {
        var headers = new Metadata().Add(InteropService.EchoInitialKey, "test_initial_metadata_value").Add(InteropService.EchoTrailingKey, [0xab, 0xab, 0xab]);
        using var call = channel.ServerStreaming(TestServiceMethods.StreamingOutputCall, new StreamingOutputCallRequest { Count = 1, Size = 10 }, new CallOptions(headers, DateTime.UtcNow.AddSeconds(10)));
        var count = 0;
        await foreach (var _ in call.ReadAllAsync()) count++;
        Assert.Equal(1, count);
        Assert.Equal("test_initial_metadata_value", (await call.GetResponseHeadersAsync()).GetValue(InteropService.EchoInitialKey));
        Assert.Equal([0xab, 0xab, 0xab], call.GetTrailers().GetBytes(InteropService.EchoTrailingKey));
    }

    private static async Task StatusCodeAndMessage(RpcChannel channel, string message)
    {
        var request = new SimpleRequest { ResponseStatus = new EchoStatus { Code = 2, Message = message } };
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(TestServiceMethods.UnaryCall, request, CallOptions.WithTimeout(TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unknown, ex.StatusCode);
        Assert.Equal(message, ex.Detail);
    }

    private static async Task ServerStreaming(RpcChannel channel, int count, int size)
    {
        var options = new RpcChannelOptions();
        using var call = channel.ServerStreaming(TestServiceMethods.StreamingOutputCall, new StreamingOutputCallRequest { Count = count, Size = size }, CallOptions.WithTimeout(TimeSpan.FromSeconds(60)));
        var next = 0;
        long bytes = 0;
        await foreach (var m in call.ReadAllAsync())
        {
            Assert.Equal(next, m.Index);
            Assert.Equal(size, m.Payload.Body.Length);
            Assert.Equal((byte)((size - 1 + next) % 251), m.Payload.Body[size - 1]);
            bytes += m.Payload.Body.Length;
            next++;
        }
        Assert.Equal(count, next);
        Assert.Equal((long)count * size, bytes);
    }

    private static async Task ClientStreaming(RpcChannel channel, int count, int size)
    {
        using var call = channel.ClientStreaming(TestServiceMethods.StreamingInputCall, CallOptions.WithTimeout(TimeSpan.FromSeconds(60)));
        var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = InteropService.MakeBody(size, 0) } };
        for (var i = 0; i < count; i++) await call.WriteAsync(chunk);
        await call.CompleteAsync();
        var response = await call.ResponseAsync;
        Assert.Equal((long)count * size, response.AggregatedPayloadSize);
    }

    private static async Task ErrorInStream(RpcChannel channel, int before)
    {
        var request = new StreamingOutputCallRequest { Count = before, Size = 16, ResponseStatus = new EchoStatus { Code = (int)StatusCode.FailedPrecondition, Message = "stop here" } };
        using var call = channel.ServerStreaming(TestServiceMethods.StreamingOutputCall, request, CallOptions.WithTimeout(TimeSpan.FromSeconds(10)));
        var received = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ReadAllAsync()) received++; });
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Equal("stop here", ex.Detail);
        Assert.Equal(before, received);
        Assert.Equal([0xab, 0xcd], ex.Trailers.GetBytes(InteropService.EchoTrailingKey));
    }

    private static async Task Timeout(RpcChannel channel)
    {
        var started = DateTime.UtcNow;
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(TestServiceMethods.UnaryCall, new SimpleRequest { SleepMs = 20_000 }, CallOptions.WithTimeout(TimeSpan.FromMilliseconds(300))));
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), "the deadline fired late");
    }

    private static async Task DeadlineMidStream(RpcChannel channel)
    {
        // 1000 messages 10 ms apart cannot finish in 500 ms: some arrive, then DEADLINE_EXCEEDED.
        using var call = channel.ServerStreaming(TestServiceMethods.StreamingOutputCall, new StreamingOutputCallRequest { Count = 1000, Size = 8, IntervalMs = 10 }, CallOptions.WithTimeout(TimeSpan.FromMilliseconds(500)));
        var received = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ReadAllAsync()) received++; });
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.InRange(received, 1, 999);
    }

    private static async Task CancelAfterFirstResponse(RpcChannel channel, Func<string, Task> cancelledSeen)
    {
        var id = Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource();
        var headers = new Metadata().Add(InteropService.CallIdKey, id);
        using var call = channel.ServerStreaming(TestServiceMethods.StreamingOutputCall, new StreamingOutputCallRequest { Count = 10_000, Size = 8, IntervalMs = 10 }, new CallOptions(headers, DateTime.UtcNow.AddSeconds(60), cts.Token));
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var _ in call.ReadAllAsync()) cts.Cancel();
        });
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
        await cancelledSeen(id).WaitAsync(TimeSpan.FromSeconds(10));
    }

    private static async Task Unimplemented(RpcChannel channel)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => channel.UnaryAsync(TestServiceMethods.UnimplementedCall, new Empty(), CallOptions.WithTimeout(TimeSpan.FromSeconds(10))));
        Assert.Equal(StatusCode.Unimplemented, ex.StatusCode);
    }
}
