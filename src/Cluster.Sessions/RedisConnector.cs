using StackExchange.Redis;

namespace Cluster.Sessions;

/// <summary>
/// Opens the process's one <see cref="ConnectionMultiplexer"/> (it is thread-safe, pipelines every
/// caller's commands on one connection and reconnects by itself; make one per process and share it).
/// </summary>
public static class RedisConnector
{
    /// <param name="configuration">
    /// "host:port", or a StackExchange.Redis configuration string such as
    /// "host:port,password=...,user=...,defaultDatabase=3".
    /// </param>
    public static Task<ConnectionMultiplexer> ConnectAsync(string configuration)
    {
        var options = ConfigurationOptions.Parse(configuration);
        // Services may start before Redis (compose, Kubernetes): keep connecting in the background
        // and let commands fail with RedisConnectionException meanwhile, rather than fail the start.
        // An explicit abortConnect=... in the string still wins.
        if (!configuration.Contains("abortConnect=", StringComparison.OrdinalIgnoreCase)) options.AbortOnConnectFail = false;
        return ConnectionMultiplexer.ConnectAsync(options);
    }
}
