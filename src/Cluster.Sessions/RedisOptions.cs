using System.Globalization;

namespace Cluster.Redis;

/// <summary>Where and how to connect. Every limit has a default so that nothing grows without bound.</summary>
public sealed record RedisOptions
{
    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; } = 6379;
    /// <summary>ACL user for <c>AUTH user password</c> (Redis 6+); null sends the one-argument <c>AUTH password</c>.</summary>
    public string? User { get; init; }
    public string? Password { get; init; }
    /// <summary>Database index sent with SELECT on every new connection (not changeable per command: the connection is shared).</summary>
    public int Database { get; init; }
    /// <summary>2 (default) or 3: with 3 the client sends <c>HELLO 3</c> and receives RESP3 types (maps, doubles, ...).</summary>
    public int Protocol { get; init; } = 2;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Longest wait for one reply (including waiting for a reconnect). Blocking reads add their BLOCK time to it.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Commands queued or awaiting a reply on one connection; further callers wait (backpressure).</summary>
    public int MaxPendingCommands { get; init; } = 8192;
    public RespLimits ReplyLimits { get; init; } = RespLimits.Default;
    /// <summary>Dedicated connections for blocking commands (XREAD BLOCK); callers beyond this wait for one.</summary>
    public int MaxBlockingConnections { get; init; } = 32;
    public TimeSpan ReconnectMinDelay { get; init; } = TimeSpan.FromMilliseconds(50);
    public TimeSpan ReconnectMaxDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Parses "host:port", "host" or "redis://[user:password@]host[:port][/db]".
    /// </summary>
    public static RedisOptions Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        if (text.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
        {
            var uri = new Uri(text);
            string? user = null, password = null;
            if (!string.IsNullOrEmpty(uri.UserInfo))
            {
                var parts = uri.UserInfo.Split(':', 2);
                if (parts.Length == 2) { user = parts[0].Length == 0 ? null : Uri.UnescapeDataString(parts[0]); password = Uri.UnescapeDataString(parts[1]); }
                else password = Uri.UnescapeDataString(parts[0]);
            }
            int db = 0;
            var path = uri.AbsolutePath.Trim('/');
            if (path.Length > 0 && !int.TryParse(path, NumberStyles.None, CultureInfo.InvariantCulture, out db))
                throw new FormatException($"database '{path}' in '{text}' is not a number");
            return new RedisOptions { Host = uri.Host, Port = uri.IsDefaultPort ? 6379 : uri.Port, User = user, Password = password, Database = db };
        }
        int colon = text.LastIndexOf(':');
        if (colon < 0) return new RedisOptions { Host = text };
        if (!int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
            throw new FormatException($"port in '{text}' is not a number from 1 to 65535");
        return new RedisOptions { Host = text[..colon], Port = port };
    }

    public override string ToString() => $"{Host}:{Port}";
}
