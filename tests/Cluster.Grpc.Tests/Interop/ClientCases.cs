using Cluster.Interop;
using Google.Protobuf;
using Grpc.Core;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>
/// The interop cases as our client (Grpc.Net.Client through GrpcChannels) runs them, against any
/// TestService server (ours or grpcio's). Names follow doc/interop-test-descriptions.md where a
/// standard case fits.
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

    public static async Task RunAllAsync(TestService.TestServiceClient client, InteropService service)
    {
        foreach (var name in Names) await RunAsync(name, client, service.CancelledAsync);
    }

    /// <param name="cancelledSeen">Completes when the server saw the call with that call-id cancelled.</param>
    public static Task RunAsync(string name, TestService.TestServiceClient client, Func<string, Task> cancelledSeen) => name switch
    {
        "empty_unary" => EmptyUnary(client),
        "large_unary" => LargeUnary(client),
        "custom_metadata" => CustomMetadata(client),
        "status_code_and_message" => StatusCodeAndMessage(client, "test status message"),
        "special_status_message" => StatusCodeAndMessage(client, SpecialMessage),
        "server_streaming_10k" => ServerStreaming(client, 10_000, 8),
        "server_streaming_64mib" => ServerStreaming(client, 64, 1 << 20),
        "client_streaming_64mib" => ClientStreaming(client, 64, 1 << 20),
        "error_before_messages" => ErrorInStream(client, 0),
        "error_after_messages" => ErrorInStream(client, 5),
        "timeout_on_sleeping_server" => Timeout(client),
        "deadline_mid_stream" => DeadlineMidStream(client),
        "cancel_after_first_response" => CancelAfterFirstResponse(client, cancelledSeen),
        "unimplemented_method" => Unimplemented(client),
        _ => throw new ArgumentException($"unknown case {name}", nameof(name)),
    };

    private static DateTime In(double seconds) => DateTime.UtcNow.AddSeconds(seconds);

    private static async Task EmptyUnary(TestService.TestServiceClient client)
    {
        var response = await client.EmptyCallAsync(new Empty(), deadline: In(10));
        Assert.NotNull(response);
    }

    private static async Task LargeUnary(TestService.TestServiceClient client)
    {
        var request = new SimpleRequest { ResponseSize = 314159, Payload = new Payload { Body = ByteString.CopyFrom(new byte[271828]) } };
        var response = await client.UnaryCallAsync(request, deadline: In(10));
        Assert.Equal(314159, response.Payload.Body.Length);
        Assert.Equal(271828, response.ReceivedSize);
        Assert.Equal(InteropService.MakeBody(314159, 0), response.Payload.Body);
    }

    private static async Task CustomMetadata(TestService.TestServiceClient client)
    {
        var headers = new Metadata { { InteropService.EchoInitialKey, "test_initial_metadata_value" }, { InteropService.EchoTrailingKey, new byte[] { 0xab, 0xab, 0xab } } };
        using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 1, Size = 10 }, headers, In(10));
        var count = 0;
        await foreach (var _ in call.ResponseStream.ReadAllAsync()) count++;
        Assert.Equal(1, count);
        Assert.Equal("test_initial_metadata_value", (await call.ResponseHeadersAsync).GetValue(InteropService.EchoInitialKey));
        Assert.Equal([0xab, 0xab, 0xab], call.GetTrailers().GetValueBytes(InteropService.EchoTrailingKey));
    }

    private static async Task StatusCodeAndMessage(TestService.TestServiceClient client, string message)
    {
        var request = new SimpleRequest { ResponseStatus = new EchoStatus { Code = 2, Message = message } };
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.UnaryCallAsync(request, deadline: In(10)));
        Assert.Equal(StatusCode.Unknown, ex.StatusCode);
        Assert.Equal(message, ex.Status.Detail);
    }

    private static async Task ServerStreaming(TestService.TestServiceClient client, int count, int size)
    {
        using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = count, Size = size }, deadline: In(60));
        var next = 0;
        long bytes = 0;
        await foreach (var m in call.ResponseStream.ReadAllAsync())
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

    private static async Task ClientStreaming(TestService.TestServiceClient client, int count, int size)
    {
        using var call = client.StreamingInputCall(deadline: In(60));
        var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = InteropService.MakeBody(size, 0) } };
        for (var i = 0; i < count; i++) await call.RequestStream.WriteAsync(chunk);
        await call.RequestStream.CompleteAsync();
        var response = await call.ResponseAsync;
        Assert.Equal((long)count * size, response.AggregatedPayloadSize);
        Assert.Equal(count, response.MessageCount);
    }

    private static async Task ErrorInStream(TestService.TestServiceClient client, int before)
    {
        var request = new StreamingOutputCallRequest { Count = before, Size = 16, ResponseStatus = new EchoStatus { Code = (int)StatusCode.FailedPrecondition, Message = "stop here" } };
        using var call = client.StreamingOutputCall(request, deadline: In(10));
        var received = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) received++; });
        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.Equal("stop here", ex.Status.Detail);
        Assert.Equal(before, received);
        Assert.Equal([0xab, 0xcd], ex.Trailers.GetValueBytes(InteropService.EchoTrailingKey));
    }

    private static async Task Timeout(TestService.TestServiceClient client)
    {
        var started = DateTime.UtcNow;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.UnaryCallAsync(new SimpleRequest { SleepMs = 20_000 }, deadline: DateTime.UtcNow.AddMilliseconds(300)));
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5), "the deadline fired late");
    }

    private static async Task DeadlineMidStream(TestService.TestServiceClient client)
    {
        // 1000 messages 10 ms apart cannot finish in 2 s (10 s of stream, mid-stream even on a loaded
        // machine): some arrive, then DEADLINE_EXCEEDED.
        using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 1000, Size = 8, IntervalMs = 10 }, deadline: In(2));
        var received = 0;
        var ex = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) received++; });
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
        Assert.InRange(received, 1, 999);
    }

    private static async Task CancelAfterFirstResponse(TestService.TestServiceClient client, Func<string, Task> cancelledSeen)
    {
        var id = Guid.NewGuid().ToString("N");
        using var cts = new CancellationTokenSource();
        var headers = new Metadata { { InteropService.CallIdKey, id } };
        using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 10_000, Size = 8, IntervalMs = 10 }, headers, In(60), cts.Token);
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var _ in call.ResponseStream.ReadAllAsync()) cts.Cancel();
        });
        Assert.Equal(StatusCode.Cancelled, ex.StatusCode);
        await cancelledSeen(id).WaitAsync(TimeSpan.FromSeconds(10));
    }

    private static async Task Unimplemented(TestService.TestServiceClient client)
    {
        var ex = await Assert.ThrowsAsync<RpcException>(async () => await client.UnimplementedCallAsync(new Empty(), deadline: In(10)));
        Assert.Equal(StatusCode.Unimplemented, ex.StatusCode);
    }
}
