using Microsoft.Extensions.Logging;

namespace Cluster.Rpc.Server;

/// <summary>Server log events with stable ids. A client's cancellation is information, not an error.</summary>
internal static partial class RpcServerLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "Unknown method {Method}")]
    public static partial void UnknownMethod(ILogger logger, string method);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Call {Method} cancelled by the client")]
    public static partial void ClientCancelled(ILogger logger, string method);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "Call {Method} exceeded its deadline")]
    public static partial void DeadlineExceeded(ILogger logger, string method);

    [LoggerMessage(EventId = 4, Level = LogLevel.Error, Message = "Handler of {Method} threw; answering INTERNAL")]
    public static partial void HandlerFailed(ILogger logger, string method, Exception exception);

    [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "Call {Method} failed with {StatusCode}: {Detail}")]
    public static partial void CallFailed(ILogger logger, string method, StatusCode statusCode, string detail);

    [LoggerMessage(EventId = 6, Level = LogLevel.Debug, Message = "Rejected a {HttpMethod} request with content-type '{ContentType}' (HTTP {HttpStatus})")]
    public static partial void Rejected(ILogger logger, string httpMethod, string? contentType, int httpStatus);
}
