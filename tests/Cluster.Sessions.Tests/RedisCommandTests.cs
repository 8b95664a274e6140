using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>Every command the session store uses, against a real redis-server, over RESP2 and RESP3.</summary>
public class RedisCommandTests(RedisFixture fixture) : IClassFixture<RedisFixture>
{
    private async Task<RedisClient?> ConnectAsync(int protocol)
        => fixture.Server is null ? null : await RedisClient.ConnectAsync(fixture.Server.Options with { Protocol = protocol });

    [Theory, InlineData(2), InlineData(3)]
    public async Task Strings_and_key_expiry(int protocol)
    {
        await using var r = await ConnectAsync(protocol);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "s";
        Assert.Null(await r.GetAsync(k));
        Assert.True(await r.SetAsync(k, "v1"));
        Assert.Equal("v1", await r.GetAsync(k));
        Assert.False(await r.SetAsync(k, "v2", when: SetCondition.IfNotExists));
        Assert.True(await r.SetAsync(k, "v3", when: SetCondition.IfExists));
        Assert.False(await r.SetAsync(k + "missing", "x", when: SetCondition.IfExists));
        Assert.Equal(-1, await r.TtlAsync(k));
        Assert.True(await r.SetAsync(k, new byte[] { 0, 255, 13, 10 }, TimeSpan.FromSeconds(100)));
        Assert.Equal(new byte[] { 0, 255, 13, 10 }, await r.GetBytesAsync(k));
        Assert.InRange(await r.TtlAsync(k), 90, 100);                          // sent as EX
        Assert.True(await r.SetAsync(k, "px", TimeSpan.FromMilliseconds(50_500)));
        Assert.InRange(await r.PTtlAsync(k), 40_000, 50_500);                   // sent as PX
        Assert.True(await r.ExpireAsync(k, 1000));
        Assert.InRange(await r.TtlAsync(k), 990, 1000);
        Assert.True(await r.PExpireAsync(k, 200_000));
        Assert.InRange(await r.PTtlAsync(k), 190_000, 200_000);
        Assert.False(await r.ExpireAsync(k + "missing", 10));
        Assert.Equal(-2, await r.TtlAsync(k + "missing"));
        Assert.Equal(2, await r.ExistsAsync(k, k, k + "missing"));
        Assert.Equal(1, await r.DeleteAsync(k, k + "missing"));
        Assert.Equal(0, await r.ExistsAsync(k));
        Assert.True(await r.SetAsync(k, "short", TimeSpan.FromMilliseconds(100)));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (await r.GetAsync(k) is not null && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.Null(await r.GetAsync(k));
    }

    [Theory, InlineData(2), InlineData(3)]
    public async Task Hashes(int protocol)
    {
        await using var r = await ConnectAsync(protocol);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "h";
        Assert.Empty(await r.HGetAllAsync(k));
        Assert.Equal(2, await r.HSetAsync(k, [new("a", "1"), new("b", "zwei")]));
        Assert.False(await r.HSetAsync(k, "a", "one"));
        Assert.Equal("one", await r.HGetAsync(k, "a"));
        Assert.Null(await r.HGetAsync(k, "nope"));
        Assert.Equal(5, await r.HIncrByAsync(k, "n", 5));
        Assert.Equal(2, await r.HIncrByAsync(k, "n", -3));
        var all = await r.HGetAllAsync(k);
        Assert.Equal(new Dictionary<string, string> { ["a"] = "one", ["b"] = "zwei", ["n"] = "2" }, all);
    }

    [Theory, InlineData(2), InlineData(3)]
    public async Task Streams(int protocol)
    {
        await using var r = await ConnectAsync(protocol);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "x";
        Assert.Equal(0, await r.XLenAsync(k));
        Assert.Equal("1-0", await r.XAddAsync(k, "1-0", [new("i", "0")]));
        Assert.Equal("2-0", await r.XAddAsync(k, "2-0", [new("i", "1"), new("s", "hé")]));
        var dup = await Assert.ThrowsAsync<RedisServerException>(() => r.XAddAsync(k, "2-0", [new("i", "1")]));
        Assert.Equal("ERR", dup.Prefix);
        Assert.Contains("equal or smaller", dup.ServerMessage);
        string auto = await r.XAddAsync(k, "*", [new("i", "2")], maxLength: 1000);
        Assert.Matches(@"^\d+-\d+$", auto);
        var all = await r.XRangeAsync(k);
        Assert.Equal(["1-0", "2-0", auto], all.Select(e => e.Id));
        Assert.Equal("hé", all[1]["s"]);
        Assert.Single(await r.XRangeAsync(k, "2-0", "2-0"));
        Assert.Equal(2, (await r.XRangeAsync(k, "(1-0", "+", count: 5)).Count);
        Assert.Single(await r.XRangeAsync(k, "-", "+", count: 1));
        var read = await r.XReadAsync([(k, "1-0")], count: 1);
        Assert.Equal(k, read[0].Key);
        Assert.Equal("2-0", Assert.Single(read[0].Entries).Id);
        Assert.Empty(await r.XReadAsync([(k, auto)]));
        Assert.Equal(3, await r.XLenAsync(k));
        Assert.Equal(2, await r.XTrimAsync(k, 1));
        Assert.Equal(1, await r.XLenAsync(k));
        Assert.Equal(0, await r.XTrimAsync(k, 1, approximate: true));
    }

    [Theory, InlineData(2), InlineData(3)]
    public async Task Xread_block_waits_on_its_own_connection_and_pipelined_commands_keep_flowing(int protocol)
    {
        await using var r = await ConnectAsync(protocol);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "xb";
        var blocked = r.XReadAsync([(k, "0-0")], count: 10, block: TimeSpan.FromSeconds(20));
        await Task.Delay(200);
        // The shared connection is not stalled by the blocked reader.
        for (int i = 0; i < 20; i++) await r.PingAsync();
        Assert.False(blocked.IsCompleted);
        await r.XAddAsync(k, "5-0", [new("i", "4")]);
        var got = await blocked.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal("5-0", Assert.Single(Assert.Single(got).Entries).Id);
        // Timeout of the block itself: an empty result, not an error.
        Assert.Empty(await r.XReadAsync([(k, "5-0")], block: TimeSpan.FromMilliseconds(100)));
        // Cancelling a blocked read ends it promptly (its connection is closed).
        using var cts = new CancellationTokenSource(300);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            r.XReadAsync([(k, "5-0")], block: TimeSpan.FromSeconds(30), ct: cts.Token).WaitAsync(TimeSpan.FromSeconds(20)));
    }

    [Theory, InlineData(2), InlineData(3)]
    public async Task Sorted_sets_and_scan(int protocol)
    {
        await using var r = await ConnectAsync(protocol);
        if (r is null) return;
        string p = RedisFixture.Prefix(), z = p + "z";
        Assert.True(await r.ZAddAsync(z, 1, "a"));
        Assert.True(await r.ZAddAsync(z, 2.5, "b"));
        Assert.True(await r.ZAddAsync(z, 3, "c"));
        Assert.False(await r.ZAddAsync(z, 4, "c"));
        Assert.Equal(4, await r.ZScoreAsync(z, "c"));
        Assert.Null(await r.ZScoreAsync(z, "nope"));
        Assert.Equal(["a", "b", "c"], await r.ZRangeByScoreAsync(z, double.NegativeInfinity, double.PositiveInfinity));
        Assert.Equal(["c", "b"], await r.ZRangeByScoreAsync(z, 2, double.PositiveInfinity, descending: true));
        Assert.Equal(["b"], await r.ZRangeByScoreAsync(z, 0, 10, offset: 1, count: 1));
        Assert.Equal(1, await r.ZRemRangeByScoreAsync(z, double.NegativeInfinity, 1));
        Assert.Equal(1, await r.ZRemAsync(z, ["b", "nope"]));
        Assert.Equal(1, await r.ZCardAsync(z));
        for (int i = 0; i < 25; i++) await r.SetAsync(p + "scan:" + i, "x");
        var keys = new HashSet<string>();
        await foreach (var key in r.ScanAsync(p + "scan:*", pageSize: 7)) keys.Add(key);
        Assert.Equal(25, keys.Count);
        Assert.True((await r.PingAsync()) < TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task Server_errors_are_typed_and_the_connection_stays_usable()
    {
        await using var r = await ConnectAsync(2);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "wt";
        await r.SetAsync(k, "string");
        var wrongType = await Assert.ThrowsAsync<RedisServerException>(() => r.HGetAllAsync(k));
        Assert.Equal("WRONGTYPE", wrongType.Prefix);
        var unknown = await Assert.ThrowsAsync<RedisServerException>(() => r.ExecuteAsync("NOSUCHCOMMAND", "x"));
        Assert.Equal("ERR", unknown.Prefix);
        Assert.Contains("unknown command", unknown.ServerMessage);
        Assert.Equal("string", await r.GetAsync(k));
        Assert.Equal(0, r.Reconnects);
    }

    [Fact]
    public async Task Generic_execute_accepts_text_bytes_and_numbers()
    {
        await using var r = await ConnectAsync(2);
        if (r is null) return;
        string k = RedisFixture.Prefix() + "g";
        Assert.Equal("OK", (await r.ExecuteAsync("SET", k, new byte[] { 49, 50 })).AsString());
        Assert.Equal(15, (await r.ExecuteAsync("INCRBY", k, 3)).AsInt64());
        Assert.Equal(RespType.BulkString, (await r.ExecuteAsync("GET", k)).Type);
    }
}
