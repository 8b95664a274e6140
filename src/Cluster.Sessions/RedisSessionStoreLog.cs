using Microsoft.Extensions.Logging;

namespace Cluster.Sessions;

internal static partial class RedisSessionStoreLog
{
    [LoggerMessage(EventId = 1501, Level = LogLevel.Warning, Message = "Following session {SessionId}: Redis unreachable ({Error}); retrying from entry {LastId}")]
    public static partial void FollowRetrying(ILogger logger, string sessionId, string error, string lastId);

    [LoggerMessage(EventId = 1502, Level = LogLevel.Information, Message = "Following session {SessionId}: Redis reachable again, continuing after entry {LastId}")]
    public static partial void FollowRecovered(ILogger logger, string sessionId, string lastId);
}
