using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>Many concurrent callers on one connection: every reply reaches the caller that asked.</summary>
public class PipeliningTests(RedisFixture fixture) : IClassFixture<RedisFixture>
{
    [Fact]
    public async Task Concurrent_callers_get_their_own_replies()
    {
        if (fixture.Server is null) return;
        await using var r = await RedisClient.ConnectAsync(fixture.Server.Options);
        string p = RedisFixture.Prefix();
        const int Tasks = 64, PerTask = 500;
        var workers = Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (int i = 0; i < PerTask; i += 2)
            {
                // Two commands in flight per caller, plus mixed reply types (bulk, integer).
                string key = $"{p}{t}:{i}";
                var set = r.SetAsync(key, $"{t}/{i}");
                var incr = r.ExecuteAsync("INCRBY", $"{p}{t}:n", i);
                Assert.True(await set);
                Assert.Equal($"{t}/{i}", await r.GetAsync(key));
                Assert.Equal(Enumerable.Range(0, i / 2 + 1).Sum(j => 2L * j), (await incr).AsInt64());
            }
        })).ToArray();
        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(3));
        Assert.Equal(0, r.Reconnects);
    }

    [Fact]
    public async Task Pending_commands_are_bounded_and_callers_wait_instead_of_queueing_without_limit()
    {
        if (fixture.Server is null) return;
        await using var r = await RedisClient.ConnectAsync(fixture.Server.Options with { MaxPendingCommands = 4 });
        string k = RedisFixture.Prefix() + "b";
        var all = Enumerable.Range(0, 2000).Select(i => r.ExecuteAsync("RPUSH", k, i)).ToArray();
        await Task.WhenAll(all).WaitAsync(TimeSpan.FromMinutes(2));
        Assert.Equal(2000, (await r.ExecuteAsync("LLEN", k)).AsInt64());
    }

    [Fact]
    public async Task Errors_in_a_pipeline_fail_only_their_own_command()
    {
        if (fixture.Server is null) return;
        await using var r = await RedisClient.ConnectAsync(fixture.Server.Options);
        string k = RedisFixture.Prefix() + "e";
        await r.SetAsync(k, "s");
        var tasks = Enumerable.Range(0, 300).Select(i => i % 3 == 0
            ? r.ExecuteAsync("HGET", k, "f")          // WRONGTYPE
            : r.ExecuteAsync("ECHO", i.ToString())).ToArray();
        for (int i = 0; i < tasks.Length; i++)
        {
            if (i % 3 == 0) Assert.Equal("WRONGTYPE", (await Assert.ThrowsAsync<RedisServerException>(() => tasks[i])).Prefix);
            else Assert.Equal(i.ToString(), (await tasks[i]).AsString());
        }
    }

    [Fact]
    public async Task A_large_value_round_trips_through_a_growing_read_buffer()
    {
        if (fixture.Server is null) return;
        await using var r = await RedisClient.ConnectAsync(fixture.Server.Options);
        string k = RedisFixture.Prefix() + "big";
        var value = new byte[3 << 20];
        new Random(5).NextBytes(value);
        await r.SetAsync(k, value);
        Assert.Equal(value, await r.GetBytesAsync(k));
        // A reply over the configured limit is a protocol error, not an unbounded allocation.
        await using var small = await RedisClient.ConnectAsync(fixture.Server.Options with { ReplyLimits = RespLimits.Default with { MaxBulkBytes = 1 << 20 } });
        await Assert.ThrowsAsync<RedisProtocolException>(() => small.GetBytesAsync(k));
        Assert.Equal("PONG", (await small.ExecuteAsync("PING")).AsString()); // reconnected
    }
}
