using System.Diagnostics.CodeAnalysis;

namespace Cluster.Redis;

/// <summary>Base of every exception this client throws on purpose.</summary>
public abstract class RedisException : Exception
{
    protected RedisException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// The server answered with an error reply (RESP <c>-</c> simple error or RESP3 <c>!</c> blob error).
/// The connection is still good. <see cref="Prefix"/> is the first word by convention
/// ("ERR", "WRONGTYPE", "NOAUTH", ...), <see cref="ServerMessage"/> the whole text.
/// </summary>
public sealed class RedisServerException : RedisException
{
    public RedisServerException(string serverMessage) : base(serverMessage)
    {
        ServerMessage = serverMessage;
        int space = serverMessage.IndexOf(' ');
        Prefix = space > 0 ? serverMessage[..space] : serverMessage;
    }

    public string Prefix { get; }
    public string ServerMessage { get; }
}

/// <summary>
/// The transport failed: connect refused or timed out, the socket closed (possibly mid-reply), or
/// the connection was dropped after a protocol error. Commands that were in flight on that
/// connection fail with this; the client reconnects for the next command.
/// </summary>
public sealed class RedisConnectionException : RedisException
{
    public RedisConnectionException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The peer sent bytes that are not valid RESP, or a reply larger than the configured limits.</summary>
public sealed class RedisProtocolException : RedisException
{
    public RedisProtocolException(string message) : base(message) { }
}

/// <summary>No reply within the command timeout. The connection stays up; a late reply is discarded.</summary>
public sealed class RedisTimeoutException : RedisException
{
    public RedisTimeoutException(string message) : base(message) { }
}

/// <summary>Throw helpers: keep the throwing code out of the parser's and writer's hot methods.</summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void Protocol(string message) => throw new RedisProtocolException(message);

    [DoesNotReturn]
    public static T Protocol<T>(string message) => throw new RedisProtocolException(message);

    [DoesNotReturn]
    public static T UnexpectedReply<T>(string command, RespValue reply) =>
        throw new RedisProtocolException($"unexpected reply to {command}: {reply.Type}");
}
