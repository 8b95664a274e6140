namespace Cluster.Rpc.Server;

/// <summary>Handler of a unary method: one request, one response.</summary>
public delegate Task<TResponse> UnaryServerMethod<TRequest, TResponse>(TRequest request, ServerCallContext context);

/// <summary>Handler of a server-streaming method: one request, responses written to <paramref name="responseStream"/>.</summary>
public delegate Task ServerStreamingServerMethod<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context);

/// <summary>Handler of a client-streaming method: enumerates the requests, returns one response.</summary>
public delegate Task<TResponse> ClientStreamingServerMethod<TRequest, TResponse>(IAsyncEnumerable<TRequest> requestStream, ServerCallContext context);

/// <summary>Writes response messages of a server-streaming call; each write is flushed to the client.</summary>
public interface IServerStreamWriter<in T>
{
    Task WriteAsync(T message, CancellationToken cancellationToken = default);
}
