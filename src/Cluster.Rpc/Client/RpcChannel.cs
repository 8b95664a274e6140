using System.Net;
using Google.Protobuf;

namespace Cluster.Rpc.Client;

/// <summary>
/// A client for one gRPC endpoint over HttpClient (cleartext HTTP/2 with prior knowledge). It
/// is thread-safe and meant to be long-lived: connections are pooled and opened as needed.
/// </summary>
public sealed class RpcChannel : IDisposable
{
    public RpcChannel(Uri address, RpcChannelOptions? options = null)
    {
        Address = address;
        Options = options ?? new RpcChannelOptions();
        var handler = new SocketsHttpHandler
        {
            // One HTTP/2 connection caps concurrent calls at the server's stream limit; open more
            // when streams pile up (NOTES.md: 500 calls, 1130 ms on one connection, 256 ms on five).
            EnableMultipleHttp2Connections = true,
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            KeepAlivePingDelay = Options.KeepAlivePingDelay,
            KeepAlivePingTimeout = Options.KeepAlivePingTimeout,
            ConnectTimeout = Options.ConnectTimeout,
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            UseProxy = false,
            // Trace context is written by TraceContext.Inject only (HttpClient's own would add a second traceparent).
            ActivityHeadersPropagator = null,
        };
        // HttpClient.Timeout (100 s by default) would kill long streams; deadlines are per call.
        Http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public Uri Address { get; }

    public RpcChannelOptions Options { get; }

    internal HttpClient Http { get; }

    /// <summary>A unary call. Throws <see cref="RpcException"/> for any non-OK status.</summary>
    public async Task<TResponse> UnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        using var call = new ClientCall<TRequest, TResponse>(this, method, options);
        await call.SendAsync(() => RequestContent.Single(request), canRetry: true).ConfigureAwait(false);
        return await call.ReadSingleAsync().ConfigureAwait(false);
    }

    /// <summary>Starts a server-streaming call; read it with <see cref="ServerStreamingCall{TResponse}.ReadAllAsync"/> and dispose it.</summary>
    public ServerStreamingCall<TResponse> ServerStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        var call = new ClientCall<TRequest, TResponse>(this, method, options);
        return new ServerStreamingCall<TResponse>(call.SendAsync(() => RequestContent.Single(request), canRetry: true), call.ReadNextAsync, call);
    }

    /// <summary>Starts a client-streaming call: write requests, complete, then await the response.</summary>
    public ClientStreamingCall<TRequest, TResponse> ClientStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options = default)
        where TRequest : class, IMessage<TRequest>
        where TResponse : class, IMessage<TResponse>
    {
        return new ClientStreamingCall<TRequest, TResponse>(new ClientCall<TRequest, TResponse>(this, method, options));
    }

    public void Dispose() => Http.Dispose();
}
