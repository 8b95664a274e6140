using System.Collections.Concurrent;
using Cluster.Rpc;
using Cluster.Rpc.Server;
using Google.Protobuf;

namespace Cluster.Interop;

/// <summary>Typed descriptors of protos/test/interop.proto's TestService.</summary>
public static class TestServiceMethods
{
    public const string Service = "cluster.interop.TestService";

    public static readonly Method<Empty, Empty> EmptyCall = new(MethodType.Unary, Service, "EmptyCall", Empty.Parser, Empty.Parser);
    public static readonly Method<SimpleRequest, SimpleResponse> UnaryCall = new(MethodType.Unary, Service, "UnaryCall", SimpleRequest.Parser, SimpleResponse.Parser);
    public static readonly Method<StreamingOutputCallRequest, StreamingOutputCallResponse> StreamingOutputCall = new(MethodType.ServerStreaming, Service, "StreamingOutputCall", StreamingOutputCallRequest.Parser, StreamingOutputCallResponse.Parser);
    public static readonly Method<StreamingInputCallRequest, StreamingInputCallResponse> StreamingInputCall = new(MethodType.ClientStreaming, Service, "StreamingInputCall", StreamingInputCallRequest.Parser, StreamingInputCallResponse.Parser);
    public static readonly Method<Empty, Empty> UnimplementedCall = new(MethodType.Unary, Service, "UnimplementedCall", Empty.Parser, Empty.Parser);
}

/// <summary>
/// Our implementation of the interop TestService (UnimplementedCall deliberately left out). It
/// records the calls whose client went away, by their "call-id" request header, so tests can
/// check that a peer's cancellation reached the handler.
/// </summary>
public sealed class InteropService
{
    public const string EchoInitialKey = "x-grpc-test-echo-initial";
    public const string EchoTrailingKey = "x-grpc-test-echo-trailing-bin";
    public const string CallIdKey = "call-id";

    private readonly ConcurrentDictionary<string, TaskCompletionSource> _cancelled = new();

    /// <summary>Completes when the call with this call-id saw its cancellation token fire.</summary>
    public Task CancelledAsync(string callId) => Signal(callId).Task;

    public void Register(RpcServiceRegistry registry) => registry
        .AddUnary(TestServiceMethods.EmptyCall, (_, _) => Task.FromResult(new Empty()))
        .AddUnary(TestServiceMethods.UnaryCall, UnaryCall)
        .AddServerStreaming(TestServiceMethods.StreamingOutputCall, StreamingOutputCall)
        .AddClientStreaming(TestServiceMethods.StreamingInputCall, StreamingInputCall);

    /// <summary>Payload of <paramref name="size"/> bytes where byte i is (i + index) % 251.</summary>
    public static ByteString MakeBody(int size, int index)
    {
        // Copied out of one repeating pattern, so that benchmarks measure the transport rather
        // than a byte loop (grpcio's server builds its payloads the same way).
        var pattern = Pattern;
        if (pattern.Length < size + 251)
        {
            pattern = new byte[size + 251];
            for (var i = 0; i < pattern.Length; i++) pattern[i] = (byte)(i % 251);
            Pattern = pattern;
        }
        return ByteString.CopyFrom(pattern, index % 251, size);
    }

    private static byte[] Pattern = [];

    private async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
    {
        Echo(context);
        using var _ = WatchCancellation(context);
        if (request.SleepMs > 0) await Task.Delay(request.SleepMs, context.CancellationToken);
        ThrowIfRequested(request.ResponseStatus);
        return new SimpleResponse
        {
            Payload = new Payload { Body = MakeBody(request.ResponseSize, 0) },
            ReceivedSize = request.Payload?.Body.Length ?? 0,
        };
    }

    private async Task StreamingOutputCall(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> stream, ServerCallContext context)
    {
        Echo(context);
        using var _ = WatchCancellation(context);
        for (var i = 0; i < request.Count; i++)
        {
            if (request.IntervalMs > 0) await Task.Delay(request.IntervalMs, context.CancellationToken);
            await stream.WriteAsync(new StreamingOutputCallResponse { Index = i, Payload = new Payload { Body = MakeBody(request.Size, i) } });
        }
        ThrowIfRequested(request.ResponseStatus);
    }

    private async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncEnumerable<StreamingInputCallRequest> requests, ServerCallContext context)
    {
        Echo(context);
        using var _ = WatchCancellation(context);
        long total = 0;
        var count = 0;
        await foreach (var r in requests)
        {
            total += r.Payload?.Body.Length ?? 0;
            count++;
        }
        return new StreamingInputCallResponse { AggregatedPayloadSize = total, MessageCount = count };
    }

    /// <summary>Interop "custom_metadata": echo these two request headers as response header and trailer.</summary>
    private static void Echo(ServerCallContext context)
    {
        if (context.RequestHeaders.GetValue(EchoInitialKey) is { } initial) context.ResponseHeaders.Add(EchoInitialKey, initial);
        if (context.RequestHeaders.GetBytes(EchoTrailingKey) is { } trailing) context.ResponseTrailers.Add(EchoTrailingKey, trailing);
    }

    private static void ThrowIfRequested(EchoStatus? status)
    {
        if (status is { Code: not 0 })
            throw new RpcException((StatusCode)status.Code, status.Message, new Metadata().Add(EchoTrailingKey, [0xab, 0xcd]));
    }

    private IDisposable? WatchCancellation(ServerCallContext context)
    {
        if (context.RequestHeaders.GetValue(CallIdKey) is not { } id) return null;
        return context.CancellationToken.Register(() => Signal(id).TrySetResult());
    }

    private TaskCompletionSource Signal(string id) => _cancelled.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
