using Microsoft.Extensions.Logging;

namespace Cluster.Gateway;

internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "session store update for {SessionId} failed: {Reason}")]
    public static partial void LogSessionStoreFailure(this ILogger logger, string sessionId, string reason);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "session {SessionId}: decode worker {Worker} lost after {Tokens} tokens ({Reason}); restarting from the latest checkpoint")]
    public static partial void LogDecodeRestart(this ILogger logger, string sessionId, string worker, int tokens, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "session {SessionId}: prefill worker {Worker} refused the connection ({Reason}); sending the prefill to another worker")]
    public static partial void LogPrefillRetry(this ILogger logger, string sessionId, string worker, string reason);
}
