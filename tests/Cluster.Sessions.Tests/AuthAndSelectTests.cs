using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>AUTH (password, and ACL user + password, also through HELLO 3) and SELECT on connect.</summary>
public class AuthAndSelectTests
{
    [Fact]
    public async Task Password_user_and_database_are_applied_on_every_connection()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(false, "--requirepass", "s3cret");
        if (server is null) return;
        var noAuth = await Assert.ThrowsAsync<RedisServerException>(async () =>
        {
            await using var c = await RedisClient.ConnectAsync(server.Options);
            await c.GetAsync("k");
        });
        Assert.Equal("NOAUTH", noAuth.Prefix);
        var wrong = await Assert.ThrowsAsync<RedisServerException>(() => RedisClient.ConnectAsync(server.Options with { Password = "nope" }));
        Assert.Equal("WRONGPASS", wrong.Prefix);

        await using (var admin = await RedisClient.ConnectAsync(server.Options with { Password = "s3cret", Database = 3 }))
        {
            await admin.SetAsync("where", "db3");
            await admin.ExecuteAsync("ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all");
        }
        await using (var db0 = await RedisClient.ConnectAsync(server.Options with { Password = "s3cret" }))
            Assert.Null(await db0.GetAsync("where"));
        await using (var alice = await RedisClient.ConnectAsync(server.Options with { User = "alice", Password = "pw", Database = 3 }))
        {
            Assert.Equal("db3", await alice.GetAsync("where"));
            Assert.Equal("alice", (await alice.ExecuteAsync("ACL", "WHOAMI")).AsString());
        }
        await using (var hello = await RedisClient.ConnectAsync(server.Options with { User = "alice", Password = "pw", Protocol = 3, Database = 3 }))
        {
            Assert.Equal("db3", await hello.GetAsync("where"));
            Assert.Equal(RespType.Map, (await hello.ExecuteAsync("HGETALL", "nothing")).Type);
        }
    }
}
