using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>One redis-server per test class; <see cref="Server"/> is null when the tests should skip.</summary>
public sealed class RedisFixture : IAsyncLifetime
{
    public RedisServerProcess? Server { get; private set; }

    public async Task InitializeAsync() => Server = await RedisServerProcess.StartOrSkipAsync();

    public async Task DisposeAsync()
    {
        if (Server is not null) await Server.DisposeAsync();
    }

    /// <summary>A unique key prefix per test so tests sharing the server never collide.</summary>
    public static string Prefix() => "t" + Guid.NewGuid().ToString("N")[..12] + ":";
}
