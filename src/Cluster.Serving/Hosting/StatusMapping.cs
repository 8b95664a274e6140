using System.Net.Sockets;
using Cluster.Serving.Kv;
using Grpc.Core;

namespace Cluster.Serving.Hosting;

/// <summary>
/// The one place where an exception becomes a gRPC status (used by <see cref="ServerCallInterceptor"/>
/// for every call of every service). A handler that has decided on a status throws
/// <see cref="RpcException"/>; everything else is classified here:
/// "no room now" is RESOURCE_EXHAUSTED, a peer or store that cannot be reached UNAVAILABLE, a caller that
/// went away CANCELLED, and anything unexpected INTERNAL, an engine bug, never the client's fault
/// (an <see cref="ArgumentException"/> from deep inside is a bug, not bad input: input is validated at
/// the edge and rejected there as INVALID_ARGUMENT naming the field).
/// </summary>
public static class StatusMapping
{
    /// <summary>The status for <paramref name="e"/>, and whether it is unexpected (to be logged as an error).</summary>
    public static (Status Status, bool Unexpected) ToStatus(Exception e, ServerCallContext context) => e switch
    {
        RpcException rpc => (rpc.Status, false),
        // A write after the client went away throws InvalidOperationException ("the request is complete").
        OperationCanceledException or IOException or InvalidOperationException when context.CancellationToken.IsCancellationRequested =>
            (context.Deadline <= DateTime.UtcNow ? new Status(StatusCode.DeadlineExceeded, "Deadline Exceeded") : new Status(StatusCode.Cancelled, "Call cancelled"), false),
        InvalidRequestException bad => (new Status(StatusCode.InvalidArgument, bad.Message), false),
        KvStoreFullException full => (new Status(StatusCode.ResourceExhausted, full.Message), false),
        Engine.Scheduling.KvAdmissionRefusedException refused => (new Status(StatusCode.ResourceExhausted, refused.Message), false),
        Engine.Compression.ContextExceededException exceeded => (new Status(StatusCode.FailedPrecondition, exceeded.Message), false),
        _ when IsUnreachable(e) => (new Status(StatusCode.Unavailable, e.Message), false),
        _ => (new Status(StatusCode.Internal, $"internal error ({e.GetType().Name}); the server log has the details"), true),
    };

    /// <summary>A dependency that cannot be reached now (a socket, an HTTP connection, the session store):
    /// worth retrying elsewhere or later, so UNAVAILABLE.</summary>
    public static bool IsUnreachable(Exception e) =>
        e is HttpRequestException or SocketException or TimeoutException or StackExchange.Redis.RedisConnectionException; // RedisTimeoutException is a TimeoutException
}
