using System.Net;
using System.Net.Sockets;
using StackExchange.Redis;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>An unreachable Redis and a redis-server killed and restarted mid-run.</summary>
public class FailureTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task Nothing_listening_fails_store_calls_with_a_connection_error_not_a_hang()
    {
        var port = new TcpListener(IPAddress.Loopback, 0);
        port.Start();
        int free = ((IPEndPoint)port.LocalEndpoint).Port;
        port.Stop();
        // The connector does not fail the start (Redis may come up later)...
        await using var redis = await RedisConnector.ConnectAsync($"127.0.0.1:{free},connectTimeout=500,asyncTimeout=1000,syncTimeout=1000").WaitAsync(Bound);
        Assert.False(redis.IsConnected);
        // ...but every command fails clearly while nothing listens: it waits in the multiplexer's
        // backlog until its timeout (checked on the 1 s heartbeat), about 2 s here.
        var store = new RedisSessionStore(redis, TimeSpan.FromMinutes(1)) { FollowOutageLimit = TimeSpan.FromSeconds(1) };
        await FailsClearlyAsync(() => store.TryAppendTokenAsync("s", new TokenEntry(0, 1)));
        await FailsClearlyAsync(() => store.GetAsync("s"));
        // A follower retries for FollowOutageLimit, then gives up with the connection error.
        await FailsClearlyAsync(async () =>
        {
            await foreach (var _ in store.FollowTokensAsync("s", -1)) { }
        });
    }

    [SkippableFact]
    public async Task Redis_restarted_mid_run_the_multiplexer_reconnects_by_itself_and_keeps_aof_data()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(appendOnly: true);
        if (server is null) return;
        await using var redis = await RedisConnector.ConnectAsync(server.Configuration);
        var r = redis.GetDatabase();
        await r.StringSetAsync("before", "kept");
        // A steady stream of commands while the server is killed and started again: each one
        // either completes or fails with a clear exception; none hangs.
        using var stop = new CancellationTokenSource();
        int ok = 0, failed = 0;
        var load = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try { await r.StringIncrementAsync("counter").WaitAsync(Bound); Interlocked.Increment(ref ok); }
                catch (Exception e) when (IsRedisFailure(e)) { Interlocked.Increment(ref failed); await Task.Delay(10); }
            }
        });
        await Task.Delay(300);
        int okBefore = ok;
        server.Kill();
        await Task.Delay(500);
        await server.StartAsync();
        // Commands succeed again once it has reconnected by itself.
        var deadline = DateTime.UtcNow + Bound;
        int okAtRestart = ok;
        while (ok < okAtRestart + 20 && DateTime.UtcNow < deadline) await Task.Delay(50);
        stop.Cancel();
        await load.WaitAsync(Bound);
        Assert.True(okBefore > 0 && ok >= okAtRestart + 20, $"ok before {okBefore}, at restart {okAtRestart}, total {ok}, failed {failed}");
        Assert.Equal("kept", (string?)await r.StringGetAsync("before"));
        // appendfsync always: every acknowledged INCR survived the kill; a failed one may or may not have run.
        long counter = (long)await r.StringGetAsync("counter");
        Assert.True(counter >= ok && counter <= ok + failed, $"counter {counter}, ok {ok}, failed {failed}");
    }

    [SkippableFact]
    public async Task Session_store_loses_nothing_across_a_redis_restart_with_appendonly()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(appendOnly: true);
        if (server is null) return;
        // Commands wait in the multiplexer's backlog up to asyncTimeout; 2 s keeps the down phase short.
        await using var redis = await RedisConnector.ConnectAsync(server.Configuration + ",asyncTimeout=2000");
        var store = new RedisSessionStore(redis, TimeSpan.FromMinutes(10));
        await store.TryCreateAsync(new SessionInfo { Id = "s1", Model = "m" });
        for (int i = 0; i < 50; i++) Assert.True(await store.TryAppendTokenAsync("s1", new TokenEntry(i, i)));
        server.Kill();
        // While it is down an append fails with a clear error (it may or may not have landed)...
        await FailsClearlyAsync(() => store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)));
        await server.StartAsync();
        // ...and the gateway's retry of the same index stores it exactly once.
        await RetryAsync(() => store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)));
        Assert.False(await store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)));
        Assert.Equal("m", (await store.GetAsync("s1"))!.Model);
        var page = await store.ReadTokensAsync("s1", -1, 100);
        Assert.Equal(Enumerable.Range(0, 51).Select(i => (long)i), page.Entries.Select(e => e.Index));
        Assert.Equal(["s1"], (await store.ListAsync(10)).Select(s => s.Id));
    }

    /// <summary>Retries a write through a Redis outage, as the gateway's writer would; any result counts as done.</summary>
    internal static async Task RetryAsync(Func<Task<bool>> write)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            try { await write(); return; }
            catch (Exception e) when (IsRedisFailure(e) && DateTime.UtcNow < deadline) { await Task.Delay(50); }
        }
    }

    /// <summary>What StackExchange.Redis throws when Redis is unreachable or refuses (RedisTimeoutException is a TimeoutException, not a RedisException).</summary>
    internal static bool IsRedisFailure(Exception e) => e is RedisException or RedisTimeoutException;

    /// <summary>The call fails with a Redis error within the bound (it does not hang).</summary>
    internal static async Task FailsClearlyAsync(Func<Task> call)
    {
        var e = await Record.ExceptionAsync(() => call().WaitAsync(Bound));
        Assert.True(e is not null && IsRedisFailure(e), $"expected a Redis connection error, got {e?.GetType().Name ?? "success"}: {e?.Message}");
    }
}
