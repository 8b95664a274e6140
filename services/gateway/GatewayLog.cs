using Microsoft.Extensions.Logging;

namespace Cluster.Gateway;

internal static partial class GatewayLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "session store update for {SessionId} failed: {Reason}")]
    public static partial void LogSessionStoreFailure(this ILogger logger, string sessionId, string reason);
}
