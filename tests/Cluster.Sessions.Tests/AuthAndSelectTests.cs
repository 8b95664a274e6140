using StackExchange.Redis;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>
/// Password, ACL user and database come from the connection string the gateway gets with --redis
/// (a StackExchange.Redis configuration string) and apply to the session store's every command.
/// </summary>
public class AuthAndSelectTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public async Task Password_user_and_database_in_the_connection_string_reach_the_store()
    {
        await using var server = await RedisServerProcess.StartOrSkipAsync(false, "--requirepass", "s3cret");
        if (server is null) return;
        var session = new SessionInfo { Id = "a", Model = "m" };

        // No password: the store's commands fail (never connected), they do not hang.
        await using (var noAuth = await RedisConnector.ConnectAsync(server.Configuration + ",connectTimeout=1000,asyncTimeout=1000,syncTimeout=1000"))
            await FailureTests.FailsClearlyAsync(() => new RedisSessionStore(noAuth, TimeSpan.FromMinutes(1)).TryCreateAsync(session));
        await using (var wrong = await RedisConnector.ConnectAsync(server.Configuration + ",password=nope,connectTimeout=1000,asyncTimeout=1000,syncTimeout=1000"))
            await FailureTests.FailsClearlyAsync(() => new RedisSessionStore(wrong, TimeSpan.FromMinutes(1)).GetAsync("a"));

        await using (var admin = await RedisConnector.ConnectAsync(server.Configuration + ",password=s3cret,defaultDatabase=3"))
        {
            Assert.True(await new RedisSessionStore(admin, TimeSpan.FromMinutes(1)).TryCreateAsync(session));
            await admin.GetDatabase().ExecuteAsync("ACL", "SETUSER", "alice", "on", ">pw", "~*", "&*", "+@all");
        }
        await using (var db0 = await RedisConnector.ConnectAsync(server.Configuration + ",password=s3cret"))
            Assert.Null(await new RedisSessionStore(db0, TimeSpan.FromMinutes(1)).GetAsync("a"));
        await using (var alice = await RedisConnector.ConnectAsync(server.Configuration + ",user=alice,password=pw,defaultDatabase=3"))
        {
            var store = new RedisSessionStore(alice, TimeSpan.FromMinutes(1));
            Assert.Equal("m", (await store.GetAsync("a"))!.Model);
            Assert.Equal("alice", (string?)await alice.GetDatabase().ExecuteAsync("ACL", "WHOAMI"));
            // Following needs the subscription connection, authenticated the same way.
            await store.TryAppendTokenAsync("a", new TokenEntry(0, 5));
            await store.CompleteTokenLogAsync("a", "stop");
            var got = new List<long>();
            await foreach (var e in store.FollowTokensAsync("a", -1).WithCancellation(new CancellationTokenSource(Bound).Token)) got.Add(e.Index);
            Assert.Equal([0L], got);
        }
    }
}
