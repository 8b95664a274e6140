using System.Collections.Concurrent;
using Google.Protobuf;
using Grpc.Core;

namespace Cluster.Interop;

/// <summary>
/// Our implementation of the interop TestService (UnimplementedCall deliberately left to the generated
/// base, which answers UNIMPLEMENTED). It records the calls whose client went away, by their "call-id"
/// request header, so tests can check that a peer's cancellation reached the handler.
/// </summary>
public sealed class InteropService : TestService.TestServiceBase
{
    public const string EchoInitialKey = "x-grpc-test-echo-initial";
    public const string EchoTrailingKey = "x-grpc-test-echo-trailing-bin";
    public const string CallIdKey = "call-id";

    private readonly ConcurrentDictionary<string, TaskCompletionSource> _cancelled = new();

    /// <summary>Completes when the call with this call-id saw its cancellation token fire.</summary>
    public Task CancelledAsync(string callId) => Signal(callId).Task;

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

    public override Task<Empty> EmptyCall(Empty request, ServerCallContext context) => Task.FromResult(new Empty());

    public override async Task<SimpleResponse> UnaryCall(SimpleRequest request, ServerCallContext context)
    {
        await Echo(context);
        using var _ = WatchCancellation(context);
        if (request.SleepMs > 0) await Task.Delay(request.SleepMs, context.CancellationToken);
        ThrowIfRequested(request.ResponseStatus);
        return new SimpleResponse
        {
            Payload = new Payload { Body = MakeBody(request.ResponseSize, 0) },
            ReceivedSize = request.Payload?.Body.Length ?? 0,
        };
    }

    public override async Task StreamingOutputCall(StreamingOutputCallRequest request, IServerStreamWriter<StreamingOutputCallResponse> stream, ServerCallContext context)
    {
        await Echo(context);
        using var _ = WatchCancellation(context);
        for (var i = 0; i < request.Count; i++)
        {
            if (request.IntervalMs > 0) await Task.Delay(request.IntervalMs, context.CancellationToken);
            await stream.WriteAsync(new StreamingOutputCallResponse { Index = i, Payload = new Payload { Body = MakeBody(request.Size, i) } });
        }
        ThrowIfRequested(request.ResponseStatus);
    }

    public override async Task<StreamingInputCallResponse> StreamingInputCall(IAsyncStreamReader<StreamingInputCallRequest> requests, ServerCallContext context)
    {
        await Echo(context);
        using var _ = WatchCancellation(context);
        long total = 0;
        var count = 0;
        await foreach (var r in requests.ReadAllAsync(context.CancellationToken))
        {
            total += r.Payload?.Body.Length ?? 0;
            count++;
        }
        return new StreamingInputCallResponse { AggregatedPayloadSize = total, MessageCount = count };
    }

    /// <summary>Interop "custom_metadata": echo these two request headers as response header and trailer.</summary>
    private static async Task Echo(ServerCallContext context)
    {
        if (context.RequestHeaders.GetValueBytes(EchoTrailingKey) is { } trailing) context.ResponseTrailers.Add(EchoTrailingKey, trailing);
        // Only when asked: writing headers early would turn an immediate error into headers + trailers.
        if (context.RequestHeaders.GetValue(EchoInitialKey) is { } initial)
            await context.WriteResponseHeadersAsync(new Metadata { { EchoInitialKey, initial } });
    }

    private static void ThrowIfRequested(EchoStatus? status)
    {
        if (status is { Code: not 0 })
            throw new RpcException(new Status((StatusCode)status.Code, status.Message), new Metadata { { EchoTrailingKey, new byte[] { 0xab, 0xcd } } });
    }

    private IDisposable? WatchCancellation(ServerCallContext context)
    {
        if (context.RequestHeaders.GetValue(CallIdKey) is not { } id) return null;
        return context.CancellationToken.Register(() => Signal(id).TrySetResult());
    }

    private TaskCompletionSource Signal(string id) => _cancelled.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
