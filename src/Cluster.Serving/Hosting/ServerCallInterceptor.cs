using System.Diagnostics;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Cluster.Serving.Hosting;

/// <summary>
/// Wraps every gRPC call of a service: a server span from the service's own source (a child of the
/// request span ASP.NET Core started from the caller's traceparent), and the mapping of exceptions to
/// statuses through <see cref="StatusMapping"/>, so handlers throw and never translate.
/// </summary>
public sealed partial class ServerCallInterceptor(ActivitySource source, ILogger<ServerCallInterceptor> logger) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        using var span = Start(context);
        try
        {
            return await continuation(request, context);
        }
        catch (Exception e)
        {
            throw Map(e, context, span);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using var span = Start(context);
        try
        {
            await continuation(request, responseStream, context);
        }
        catch (Exception e)
        {
            throw Map(e, context, span);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using var span = Start(context);
        try
        {
            return await continuation(requestStream, context);
        }
        catch (Exception e)
        {
            throw Map(e, context, span);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using var span = Start(context);
        try
        {
            await continuation(requestStream, responseStream, context);
        }
        catch (Exception e)
        {
            throw Map(e, context, span);
        }
    }

    /// <summary>Health checks and reflection are plumbing: no span.</summary>
    private Activity? Start(ServerCallContext context) =>
        context.Method.StartsWith("/grpc.", StringComparison.Ordinal) ? null : source.StartActivity(context.Method, ActivityKind.Server);

    private RpcException Map(Exception e, ServerCallContext context, Activity? span)
    {
        var (status, unexpected) = StatusMapping.ToStatus(e, context);
        if (unexpected) HandlerFailed(logger, context.Method, e);
        else if (status.StatusCode is StatusCode.Cancelled) ClientCancelled(logger, context.Method);
        else CallFailed(logger, context.Method, status.StatusCode, status.Detail);
        span?.SetTag("rpc.grpc.status_code", (int)status.StatusCode);
        span?.SetStatus(ActivityStatusCode.Error, status.StatusCode.ToString());
        return e is RpcException rpc ? rpc : new RpcException(status);
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "{Method} failed with an unexpected exception")]
    private static partial void HandlerFailed(ILogger logger, string method, Exception exception);

    [LoggerMessage(EventId = 101, Level = LogLevel.Debug, Message = "{Method} ended with {Code}: {Detail}")]
    private static partial void CallFailed(ILogger logger, string method, StatusCode code, string detail);

    [LoggerMessage(EventId = 102, Level = LogLevel.Debug, Message = "{Method} cancelled by the client")]
    private static partial void ClientCancelled(ILogger logger, string method);
}
