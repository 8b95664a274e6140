using Cluster.Rpc.Protocol;
using Google.Protobuf;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Cluster.Rpc.Server;

/// <summary>
/// The methods a server offers, by full path, and the dispatcher that validates each HTTP/2
/// request as the gRPC over HTTP/2 spec asks before handing it to the method's call handler.
/// </summary>
public sealed class RpcServiceRegistry
{
    private readonly Dictionary<string, ServerCallHandler> _handlers = new(StringComparer.Ordinal);
    private readonly RpcServerOptions _options;
    private readonly ILogger _logger;

    public RpcServiceRegistry(RpcServerOptions? options = null, ILogger? logger = null)
    {
        _options = options ?? new RpcServerOptions();
        _logger = logger ?? NullLogger.Instance;
    }

    public IReadOnlyCollection<string> Methods => _handlers.Keys;

    public RpcServiceRegistry AddUnary<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse> handler)
        where TRequest : class, IMessage<TRequest> where TResponse : class, IMessage<TResponse> =>
        Add(method.Type, MethodType.Unary, new UnaryServerCallHandler<TRequest, TResponse>(method, handler, _options, _logger));

    public RpcServiceRegistry AddServerStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse> handler)
        where TRequest : class, IMessage<TRequest> where TResponse : class, IMessage<TResponse> =>
        Add(method.Type, MethodType.ServerStreaming, new ServerStreamingServerCallHandler<TRequest, TResponse>(method, handler, _options, _logger));

    public RpcServiceRegistry AddClientStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse> handler)
        where TRequest : class, IMessage<TRequest> where TResponse : class, IMessage<TResponse> =>
        Add(method.Type, MethodType.ClientStreaming, new ClientStreamingServerCallHandler<TRequest, TResponse>(method, handler, _options, _logger));

    /// <summary>
    /// Serves one HTTP/2 request: 405 for a non-POST, 415 for a non-gRPC content type (both as
    /// the spec's HTTP-level answers), UNIMPLEMENTED for an unknown path, else the method's handler.
    /// </summary>
    public Task DispatchAsync(HttpContext http)
    {
        var request = http.Request;
        if (!HttpMethods.IsPost(request.Method))
            return Reject(http, StatusCodes.Status405MethodNotAllowed, $"Method '{request.Method}' not allowed: gRPC uses POST");
        if (!GrpcProtocol.IsGrpcContentType(request.ContentType))
            return Reject(http, StatusCodes.Status415UnsupportedMediaType, $"Content-Type '{request.ContentType}' is not supported");

        var path = request.Path.Value ?? "";
        if (_handlers.TryGetValue(path, out var handler)) return handler.HandleAsync(http);

        RpcServerLog.UnknownMethod(_logger, path);
        ServerResponse.WriteStatus(http.Response, StatusCode.Unimplemented, $"Method is unimplemented: {path}", null, null);
        return Task.CompletedTask;
    }

    private RpcServiceRegistry Add(MethodType actual, MethodType expected, ServerCallHandler handler)
    {
        if (actual != expected) throw new ArgumentException($"{handler.Method} is {actual}, not {expected}", "method");
        if (!_handlers.TryAdd(handler.Method, handler)) throw new ArgumentException($"{handler.Method} is already registered", "method");
        return this;
    }

    private Task Reject(HttpContext http, int httpStatus, string message)
    {
        RpcServerLog.Rejected(_logger, http.Request.Method, http.Request.ContentType, httpStatus);
        http.Response.StatusCode = httpStatus;
        if (httpStatus == StatusCodes.Status405MethodNotAllowed) http.Response.Headers.Allow = "POST";
        // A gRPC client maps the HTTP status itself; grpc-status is added for clients that look.
        http.Response.Headers[GrpcProtocol.StatusHeader] = ((int)StatusCode.Internal).ToString();
        http.Response.Headers[GrpcProtocol.MessageHeader] = PercentEncoding.Encode(message);
        return Task.CompletedTask;
    }
}
