using Cluster.Redis.Sessions;
using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>Transport failures: mid-reply closes, garbage, silence, refused connects and a restarted redis-server.</summary>
public class FailureTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Close_in_the_middle_of_a_reply_fails_the_command_and_the_next_one_reconnects()
    {
        // First connection: answer GET with half a bulk string, then close. Later ones: answer properly.
        await using var fake = new FakeRedisServer(async (n, s, ct) =>
        {
            while (await FakeRedisServer.ReadCommandsAsync(s, 1, ct))
            {
                if (n == 1)
                {
                    await s.WriteAsync("$10\r\nhello"u8.ToArray(), ct);
                    await s.FlushAsync(ct);
                    await Task.Delay(50, ct);
                    return;
                }
                await s.WriteAsync("$5\r\nworld\r\n"u8.ToArray(), ct);
            }
        });
        await using var r = new RedisClient(fake.Options);
        var ex = await Assert.ThrowsAsync<RedisConnectionException>(() => r.GetAsync("k").WaitAsync(Bound));
        Assert.Contains("middle of a reply", ex.Message);
        Assert.Equal("world", await r.GetAsync("k").WaitAsync(Bound));
        Assert.Equal(2, fake.Connections);
        Assert.Equal(1, r.Reconnects);
    }

    [Fact]
    public async Task Every_in_flight_command_fails_when_the_connection_drops()
    {
        await using var fake = new FakeRedisServer(async (n, s, ct) =>
        {
            if (n == 1) { await FakeRedisServer.ReadCommandsAsync(s, 10, ct); await s.WriteAsync("+OK\r\n+OK\r\n"u8.ToArray(), ct); return; }
            while (await FakeRedisServer.ReadCommandsAsync(s, 1, ct)) await s.WriteAsync("+PONG\r\n"u8.ToArray(), ct);
        });
        await using var r = new RedisClient(fake.Options);
        var tasks = Enumerable.Range(0, 10).Select(_ => r.ExecuteAsync("PING")).ToArray();
        var all = Task.WhenAll(tasks);
        await Assert.ThrowsAnyAsync<Exception>(() => all.WaitAsync(Bound));
        Assert.Equal(2, tasks.Count(t => t.IsCompletedSuccessfully));
        Assert.All(tasks.Where(t => t.IsFaulted), t => Assert.IsType<RedisConnectionException>(t.Exception!.InnerException));
        Assert.Equal("PONG", (await r.ExecuteAsync("PING").WaitAsync(Bound)).AsString());
    }

    [Fact]
    public async Task Malformed_reply_is_a_protocol_exception_and_the_connection_is_replaced()
    {
        await using var fake = new FakeRedisServer(async (n, s, ct) =>
        {
            while (await FakeRedisServer.ReadCommandsAsync(s, 1, ct))
                await s.WriteAsync(n == 1 ? "?garbage\r\n"u8.ToArray() : "+PONG\r\n"u8.ToArray(), ct);
        });
        await using var r = new RedisClient(fake.Options);
        await Assert.ThrowsAsync<RedisProtocolException>(() => r.ExecuteAsync("PING").WaitAsync(Bound));
        Assert.Equal("PONG", (await r.ExecuteAsync("PING").WaitAsync(Bound)).AsString());
    }

    [Fact]
    public async Task A_silent_server_gives_a_timeout_not_a_hang()
    {
        await using var fake = new FakeRedisServer(async (_, s, ct) => { await FakeRedisServer.ReadCommandsAsync(s, 1000, ct); });
        await using var r = new RedisClient(fake.Options with { CommandTimeout = TimeSpan.FromMilliseconds(300) });
        var ex = await Assert.ThrowsAsync<RedisTimeoutException>(() => r.ExecuteAsync("PING").WaitAsync(Bound));
        Assert.Contains("PING", ex.Message);
    }

    [Fact]
    public async Task Nothing_listening_fails_with_a_connection_exception_within_the_command_timeout()
    {
        var port = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        port.Start();
        int free = ((System.Net.IPEndPoint)port.LocalEndpoint).Port;
        port.Stop();
        var options = new RedisOptions { Port = free, CommandTimeout = TimeSpan.FromMilliseconds(500) };
        await Assert.ThrowsAsync<RedisConnectionException>(() => RedisClient.ConnectAsync(options).WaitAsync(Bound));
        await using var r = new RedisClient(options);
        var ex = await Assert.ThrowsAsync<RedisConnectionException>(() => r.ExecuteAsync("PING").WaitAsync(Bound));
        Assert.Contains("not connected", ex.Message);
        Assert.Contains("last attempt", ex.Message);
    }

    [Fact]
    public async Task Failed_connection_attempts_back_off_exponentially()
    {
        // Every attempt fails its AUTH (the peer hangs up), so the client keeps retrying; with
        // delays of 100, 200, 400, 400 ... ms about 5 attempts fit in 1.5 s, not hundreds.
        await using var fake = new FakeRedisServer((_, _, _) => Task.CompletedTask);
        var options = fake.Options with
        {
            Password = "x", CommandTimeout = TimeSpan.FromMilliseconds(1500),
            ReconnectMinDelay = TimeSpan.FromMilliseconds(100), ReconnectMaxDelay = TimeSpan.FromMilliseconds(400),
        };
        await using var r = new RedisClient(options);
        var ex = await Assert.ThrowsAsync<RedisConnectionException>(() => r.ExecuteAsync("PING").WaitAsync(Bound));
        Assert.Contains("last attempt", ex.Message);
        Assert.InRange(fake.Connections, 2, 12);
    }

    [Fact]
    public async Task Redis_restarted_mid_run_the_client_reconnects_by_itself_and_keeps_aof_data()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(appendOnly: true);
        if (server is null) return;
        await using var r = await RedisClient.ConnectAsync(server.Options with { CommandTimeout = TimeSpan.FromSeconds(30) });
        await r.SetAsync("before", "kept");
        // A steady stream of commands while the server is killed and started again: each one
        // either completes or fails with a clear exception; none hangs.
        using var stop = new CancellationTokenSource();
        int ok = 0, failed = 0;
        var load = Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                try { await r.ExecuteAsync("INCR", "counter").WaitAsync(Bound); Interlocked.Increment(ref ok); }
                catch (RedisException) { Interlocked.Increment(ref failed); await Task.Delay(10); }
            }
        });
        await Task.Delay(300);
        server.Kill();
        await Task.Delay(500);
        await server.StartAsync();
        await Task.Delay(800);
        stop.Cancel();
        await load.WaitAsync(Bound);
        Assert.Equal("kept", await r.GetAsync("before"));
        Assert.True(r.Reconnects >= 1, $"reconnects {r.Reconnects}");
        Assert.True(ok > 0, $"ok {ok}, failed {failed}");
        // appendfsync always: every acknowledged INCR survived the kill; a failed one may or may not have run.
        long counter = (await r.ExecuteAsync("GET", "counter")).AsInt64();
        Assert.True(counter >= ok && counter <= ok + failed, $"counter {counter}, ok {ok}, failed {failed}");
    }

    [Fact]
    public async Task Session_store_loses_nothing_across_a_redis_restart_with_appendonly()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(appendOnly: true);
        if (server is null) return;
        // Commands wait for a reconnect up to the command timeout; 5 s keeps the down phase short.
        await using var r = await RedisClient.ConnectAsync(server.Options with { CommandTimeout = TimeSpan.FromSeconds(5) });
        var store = new RedisSessionStore(r, TimeSpan.FromMinutes(10));
        await store.TryCreateAsync(new SessionInfo { Id = "s1", Model = "m" });
        for (int i = 0; i < 50; i++) Assert.True(await store.TryAppendTokenAsync("s1", new TokenEntry(i, i)));
        server.Kill();
        // While it is down an append fails with a clear error (it may or may not have landed)...
        await Assert.ThrowsAnyAsync<RedisException>(() => store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)).WaitAsync(Bound));
        await server.StartAsync();
        // ...and the gateway's retry of the same index stores it exactly once.
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            try { await store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)); break; }
            catch (RedisException) when (DateTime.UtcNow < deadline) { await Task.Delay(100); }
        }
        Assert.False(await store.TryAppendTokenAsync("s1", new TokenEntry(50, 50)));
        Assert.Equal("m", (await store.GetAsync("s1"))!.Model);
        var page = await store.ReadTokensAsync("s1", -1, 100);
        Assert.Equal(Enumerable.Range(0, 51).Select(i => (long)i), page.Entries.Select(e => e.Index));
        Assert.Equal(["s1"], (await store.ListAsync(10)).Select(s => s.Id));
    }

    [Fact]
    public async Task A_peer_sending_random_replies_never_hangs_or_crashes_the_client()
    {
        // Fuzz-style at the connection level: each command is answered with a valid reply, a
        // mutated one, a truncated one or noise. Every call must finish, with a reply or a
        // RedisException, within its timeout.
        await using var fake = new FakeRedisServer(async (n, s, ct) =>
        {
            var rng = new Random(n);
            byte[][] replies = ["+OK\r\n"u8.ToArray(), "$5\r\nhello\r\n"u8.ToArray(), "*2\r\n:1\r\n$-1\r\n"u8.ToArray(), "%1\r\n+a\r\n,1.5\r\n"u8.ToArray()];
            while (await FakeRedisServer.ReadCommandsAsync(s, 1, ct))
            {
                var reply = (byte[])replies[rng.Next(replies.Length)].Clone();
                switch (rng.Next(4))
                {
                    case 0: break;
                    case 1: reply[rng.Next(reply.Length)] = (byte)rng.Next(256); break;
                    case 2: reply = reply[..rng.Next(reply.Length)]; break;
                    default: rng.NextBytes(reply); break;
                }
                await s.WriteAsync(reply, ct);
            }
        });
        await using var r = new RedisClient(fake.Options with { CommandTimeout = TimeSpan.FromMilliseconds(200), ReconnectMinDelay = TimeSpan.FromMilliseconds(1) });
        int replied = 0, failed = 0;
        for (int i = 0; i < 60; i++)
        {
            try { await r.ExecuteAsync("GET", "k").WaitAsync(Bound); replied++; }
            catch (RedisException) { failed++; }
        }
        Assert.True(replied > 0 && failed > 0, $"replied {replied}, failed {failed}");
    }

    [Fact]
    public async Task Resp3_push_messages_between_replies_are_not_taken_as_replies()
    {
        await using var fake = new FakeRedisServer(async (_, s, ct) =>
        {
            while (await FakeRedisServer.ReadCommandsAsync(s, 1, ct))
                await s.WriteAsync(">2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n+PONG\r\n"u8.ToArray(), ct);
        });
        await using var r = new RedisClient(fake.Options);
        for (int i = 0; i < 3; i++) Assert.Equal("PONG", (await r.ExecuteAsync("PING").WaitAsync(Bound)).AsString());
    }
}
