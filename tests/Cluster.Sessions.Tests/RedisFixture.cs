using StackExchange.Redis;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>
/// One redis-server per test class and one multiplexer on it, shared by the class's tests as a
/// process shares one in production; <see cref="Require"/> skips a test when redis-server is missing.
/// </summary>
public sealed class RedisFixture : IAsyncLifetime
{
    public RedisServerProcess? Server { get; private set; }
    public ConnectionMultiplexer? Redis { get; private set; }

    /// <summary>Why there is no server (the skip or, in CI, the failure), rethrown by <see cref="Require"/>.</summary>
    private Exception? Missing { get; set; }

    /// <summary>The shared multiplexer; skips (fails in CI) the calling test when redis-server is missing.</summary>
    public ConnectionMultiplexer Require() => Redis ?? throw (Missing is SkipException ? new SkipException(Missing.Message) : new InvalidOperationException(Missing?.Message ?? "no redis-server"));

    public async Task InitializeAsync()
    {
        // A missing redis-server must skip (or fail in CI) each test, not the fixture: remember why.
        try
        {
            Server = await RedisServerProcess.StartOrSkipAsync();
        }
        catch (Exception e) when (e is SkipException or InvalidOperationException)
        {
            Missing = e;
            return;
        }
        Redis = await RedisConnector.ConnectAsync(Server!.Configuration);
    }

    public async Task DisposeAsync()
    {
        if (Redis is not null) await Redis.DisposeAsync();
        if (Server is not null) await Server.DisposeAsync();
    }

    /// <summary>A unique key prefix per test so tests sharing the server never collide.</summary>
    public static string Prefix() => "t" + Guid.NewGuid().ToString("N")[..12] + ":";
}
