using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace Cluster.Gateway.OpenAi;

/// <summary>
/// The <see cref="ServerCallContext"/> an HTTP request gives the gateway's own gRPC handlers
/// (<see cref="GenerateCall"/>): the request's abort token is the call's cancellation (a client that
/// closes its connection stops decode exactly as a cancelled gRPC call does), and there is no deadline.
/// </summary>
internal sealed class HttpCallContext(HttpContext http, string method) : ServerCallContext
{
    protected override string MethodCore => method;
    protected override string HostCore => http.Request.Host.Value ?? "";
    protected override string PeerCore => $"ipv4:{http.Connection.RemoteIpAddress}:{http.Connection.RemotePort}";
    protected override DateTime DeadlineCore => DateTime.MaxValue;
    protected override Metadata RequestHeadersCore { get; } = [];
    protected override CancellationToken CancellationTokenCore => http.RequestAborted;
    protected override Metadata ResponseTrailersCore { get; } = [];
    protected override Status StatusCore { get; set; }
    protected override WriteOptions? WriteOptionsCore { get; set; }
    protected override AuthContext AuthContextCore { get; } = new(null, new Dictionary<string, List<AuthProperty>>());

    protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) =>
        throw new NotSupportedException("an HTTP request has no gRPC context to propagate");

    protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;

    // Grpc.AspNetCore's GetHttpContext() looks here for contexts it did not make (its documented test
    // hook), so code that asks a call for its HttpContext (RequestArrival) works on both front doors.
    protected override IDictionary<object, object> UserStateCore { get; } = new Dictionary<object, object> { ["__HttpContext"] = http };
}

/// <summary>Hands each response the gRPC handler writes to a function (the HTTP side turns them into JSON or SSE).</summary>
internal sealed class ResponseSink<T>(Func<T, Task> write) : IServerStreamWriter<T>
{
    public WriteOptions? WriteOptions { get; set; }

    public Task WriteAsync(T message) => write(message);
}
