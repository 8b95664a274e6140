using StackExchange.Redis;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>
/// One redis-server per test class and one multiplexer on it, shared by the class's tests as a
/// process shares one in production; <see cref="Server"/> is null when the tests should skip.
/// </summary>
public sealed class RedisFixture : IAsyncLifetime
{
    public RedisServerProcess? Server { get; private set; }
    public ConnectionMultiplexer? Redis { get; private set; }

    public async Task InitializeAsync()
    {
        Server = await RedisServerProcess.StartOrSkipAsync();
        if (Server is not null) Redis = await RedisConnector.ConnectAsync(Server.Configuration);
    }

    public async Task DisposeAsync()
    {
        if (Redis is not null) await Redis.DisposeAsync();
        if (Server is not null) await Server.DisposeAsync();
    }

    /// <summary>A unique key prefix per test so tests sharing the server never collide.</summary>
    public static string Prefix() => "t" + Guid.NewGuid().ToString("N")[..12] + ":";
}
