using StackExchange.Redis;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>
/// The one contract every <see cref="ISessionStore"/> keeps; run against the in-memory and the
/// Redis implementation by the two classes at the bottom.
/// </summary>
public abstract class SessionStoreContract
{
    protected static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    /// <summary>A fresh, empty store, or null to skip (no redis-server).</summary>
    protected abstract Task<ISessionStore?> CreateStoreAsync(TimeSpan ttl);

    private static SessionInfo NewSession(string id) => new()
    {
        Id = id, Model = "stories15M", KvPolicy = "sink_window(4,64)", PromptTokens = 7,
        Parameters = new Dictionary<string, string> { ["temperature"] = "0.8", ["seed"] = "42" },
    };

    [SkippableFact]
    public async Task Create_get_update_delete()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        Assert.True(await store.TryCreateAsync(NewSession("a")));
        Assert.False(await store.TryCreateAsync(NewSession("a") with { Model = "other" }));
        var got = await store.GetAsync("a");
        Assert.NotNull(got);
        Assert.Equal(("stories15M", "sink_window(4,64)", 7, SessionStatus.Running, -1L), (got.Model, got.KvPolicy, got.PromptTokens, got.Status, got.CheckpointTokenIndex));
        Assert.Equal("42", got.Parameters["seed"]);
        Assert.Equal(2, got.Parameters.Count);
        Assert.True(got.CreatedAt > DateTimeOffset.UtcNow.AddMinutes(-5));

        Assert.True(await store.UpdateAsync("a", new SessionUpdate { DecodeWorker = "decode-1", PrefillWorker = "prefill-0", GeneratedTokens = 12 }));
        Assert.True(await store.UpdateAsync("a", new SessionUpdate { CheckpointId = "ckpt-3", CheckpointTokenIndex = 10, Status = SessionStatus.Finished }));
        got = await store.GetAsync("a");
        Assert.Equal(("decode-1", "prefill-0", 12, "ckpt-3", 10L, SessionStatus.Finished),
            (got!.DecodeWorker, got.PrefillWorker, got.GeneratedTokens, got.CheckpointId, got.CheckpointTokenIndex, got.Status));
        Assert.True(got.UpdatedAt >= got.CreatedAt);
        Assert.False(await store.UpdateAsync("missing", new SessionUpdate { GeneratedTokens = 1 }));
        Assert.Null(await store.GetAsync("missing"));

        await store.TryAppendTokenAsync("a", new TokenEntry(0, 5));
        Assert.True(await store.DeleteAsync("a"));
        Assert.Null(await store.GetAsync("a"));
        Assert.Empty((await store.ReadTokensAsync("a", -1, 10)).Entries);
        Assert.False(await store.DeleteAsync("a"));
    }

    [SkippableFact]
    public async Task Update_merges_parameters_and_keeps_the_others()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        Assert.True(await store.TryCreateAsync(NewSession("p")));
        Assert.True(await store.UpdateAsync("p", new SessionUpdate { Parameters = new Dictionary<string, string> { ["turns"] = "3", ["seed"] = "7" } }));
        var got = await store.GetAsync("p");
        Assert.Equal(("3", "7", "0.8"), (got!.Parameters["turns"], got.Parameters["seed"], got.Parameters["temperature"]));
        Assert.Equal(3, got.Parameters.Count);
    }

    [SkippableFact]
    public async Task Append_then_read_after_an_index()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("s"));
        for (int i = 0; i < 10; i++) Assert.True(await store.TryAppendTokenAsync("s", new TokenEntry(i, 100 + i, $"t{i}")));
        var all = await store.ReadTokensAsync("s", -1, 100);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => new TokenEntry(i, 100 + i, $"t{i}")), all.Entries);
        Assert.False(all.IsComplete);
        Assert.Equal([5L, 6, 7], (await store.ReadTokensAsync("s", 4, 3)).Entries.Select(e => e.Index));
        Assert.Empty((await store.ReadTokensAsync("s", 9, 10)).Entries);
        Assert.Equal("t0", (await store.ReadTokensAsync("s", -1, 1)).Entries[0].Text);
        Assert.True(await store.TryAppendTokenAsync("s", new TokenEntry(10, 7)));
        Assert.Null((await store.ReadTokensAsync("s", 9, 1)).Entries[0].Text);
    }

    [SkippableFact]
    public async Task Duplicate_or_stale_index_is_rejected_never_stored_twice()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        for (int i = 0; i < 3; i++) Assert.True(await store.TryAppendTokenAsync("d", new TokenEntry(i, i)));
        Assert.False(await store.TryAppendTokenAsync("d", new TokenEntry(2, 99)));
        Assert.False(await store.TryAppendTokenAsync("d", new TokenEntry(0, 99)));
        // Two writers retrying the same indices at once: each index is stored exactly once.
        var racers = Enumerable.Range(0, 2).Select(_ => Task.Run(async () =>
        {
            int won = 0;
            for (int i = 3; i < 200; i++) if (await store.TryAppendTokenAsync("d", new TokenEntry(i, i))) won++;
            return won;
        })).ToArray();
        var wins = await Task.WhenAll(racers).WaitAsync(Bound);
        Assert.Equal(197, wins.Sum());
        var page = await store.ReadTokensAsync("d", -1, 1000);
        Assert.Equal(Enumerable.Range(0, 200).Select(i => (long)i), page.Entries.Select(e => e.Index));
    }

    [SkippableFact]
    public async Task Appends_issued_back_to_back_by_one_writer_stay_in_order()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        // Not awaited one by one: on Redis they share the pipeline, and order must still hold.
        var appends = Enumerable.Range(0, 1000).Select(i => store.TryAppendTokenAsync("o", new TokenEntry(i, i % 32000))).ToArray();
        Assert.All(await Task.WhenAll(appends).WaitAsync(Bound), Assert.True);
        var got = new List<TokenEntry>();
        long after = -1;
        while (true)
        {
            var page = await store.ReadTokensAsync("o", after, 300);
            if (page.Entries.Count == 0) break;
            got.AddRange(page.Entries);
            after = page.Entries[^1].Index;
        }
        Assert.Equal(Enumerable.Range(0, 1000).Select(i => (long)i), got.Select(e => e.Index));
    }

    [SkippableFact]
    public async Task Complete_marks_the_end_keeps_the_first_reason_and_refuses_appends()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("c"));
        for (int i = 0; i < 3; i++) await store.TryAppendTokenAsync("c", new TokenEntry(i, i));
        await store.CompleteTokenLogAsync("c", "stop");
        await store.CompleteTokenLogAsync("c", "length");
        Assert.False(await store.TryAppendTokenAsync("c", new TokenEntry(3, 3)));
        var full = await store.ReadTokensAsync("c", -1, 3);
        Assert.Equal((3, true, "stop"), (full.Entries.Count, full.IsComplete, full.FinishReason));
        var partial = await store.ReadTokensAsync("c", -1, 2);
        Assert.Equal((2, false), (partial.Entries.Count, partial.IsComplete));
        var tail = await store.ReadTokensAsync("c", 2, 10);
        Assert.Equal((0, true, "stop"), (tail.Entries.Count, tail.IsComplete, tail.FinishReason));
        Assert.Equal("stop", (await store.GetAsync("c"))!.FinishReason);
    }

    [SkippableFact]
    public async Task Follow_replays_then_delivers_live_entries_then_ends_at_completion()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("f"));
        for (int i = 0; i < 5; i++) await store.TryAppendTokenAsync("f", new TokenEntry(i, i));
        var received = new List<long>();
        var follower = Task.Run(async () =>
        {
            await foreach (var e in store.FollowTokensAsync("f", 1)) received.Add(e.Index);
        });
        await Task.Delay(200);
        for (int i = 5; i < 40; i++)
        {
            await store.TryAppendTokenAsync("f", new TokenEntry(i, i));
            if (i % 10 == 0) await Task.Delay(20);
        }
        await store.CompleteTokenLogAsync("f", "stop");
        await follower.WaitAsync(Bound);
        Assert.Equal(Enumerable.Range(2, 38).Select(i => (long)i), received);
        // Following a finished log from any point replays the rest and ends.
        foreach (long after in new long[] { -1, 20, 39 })
        {
            var again = new List<long>();
            await foreach (var e in store.FollowTokensAsync("f", after).WithCancellation(new CancellationTokenSource(Bound).Token)) again.Add(e.Index);
            Assert.Equal(Enumerable.Range((int)after + 1, 39 - (int)after).Select(i => (long)i), again);
        }
    }

    [SkippableFact]
    public async Task Follow_stops_on_cancellation_and_when_the_session_is_deleted()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("w"));
        using var cts = new CancellationTokenSource(300);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in store.FollowTokensAsync("w", -1, cts.Token)) { }
        }).WaitAsync(Bound);
        var follower = Task.Run(async () => { await foreach (var _ in store.FollowTokensAsync("w", -1)) { } });
        await Task.Delay(200);
        await store.DeleteAsync("w");
        await follower.WaitAsync(Bound);
    }

    [SkippableFact]
    public async Task Sessions_and_logs_expire_after_the_ttl_without_activity()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMilliseconds(700));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("e"));
        await store.TryAppendTokenAsync("e", new TokenEntry(0, 1));
        Assert.NotNull(await store.GetAsync("e"));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while ((await store.GetAsync("e") is not null || (await store.ReadTokensAsync("e", -1, 5)).Entries.Count > 0) && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        Assert.Null(await store.GetAsync("e"));
        Assert.Empty((await store.ReadTokensAsync("e", -1, 5)).Entries);
        Assert.Empty(await store.ListAsync(10));
    }

    [SkippableFact]
    public async Task Appends_keep_the_session_alive_past_its_ttl()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMilliseconds(1500));
        if (store is null) return;
        await store.TryCreateAsync(NewSession("alive"));
        for (int i = 0; i < 10; i++)
        {
            await Task.Delay(300);
            Assert.True(await store.TryAppendTokenAsync("alive", new TokenEntry(i, i)));
        }
        Assert.NotNull(await store.GetAsync("alive"));            // 3 s after creation, TTL 1.5 s
        Assert.Equal(["alive"], (await store.ListAsync(5)).Select(s => s.Id));
        Assert.Equal(10, (await store.ReadTokensAsync("alive", -1, 100)).Entries.Count);
    }

    [SkippableFact]
    public async Task List_shows_live_sessions_most_recently_active_first()
    {
        var store = await CreateStoreAsync(TimeSpan.FromMinutes(5));
        if (store is null) return;
        foreach (var id in new[] { "l1", "l2", "l3" })
        {
            await store.TryCreateAsync(NewSession(id));
            await Task.Delay(20);
        }
        Assert.Equal(["l3", "l2", "l1"], (await store.ListAsync(10)).Select(s => s.Id));
        await Task.Delay(20);
        await store.UpdateAsync("l1", new SessionUpdate { GeneratedTokens = 3 });
        Assert.Equal(["l1", "l3"], (await store.ListAsync(2)).Select(s => s.Id));
        await store.DeleteAsync("l3");
        Assert.Equal(["l1", "l2"], (await store.ListAsync(10)).Select(s => s.Id));
    }
}

public sealed class InMemorySessionStoreTests : SessionStoreContract
{
    protected override Task<ISessionStore?> CreateStoreAsync(TimeSpan ttl) => Task.FromResult<ISessionStore?>(new InMemorySessionStore(ttl));

    [SkippableFact]
    public async Task Bounded_in_sessions_and_tokens()
    {
        var store = new InMemorySessionStore(TimeSpan.FromMinutes(1), maxSessions: 3, maxTokensPerSession: 2);
        foreach (var id in new[] { "a", "b", "c", "d" })
        {
            await store.TryCreateAsync(new SessionInfo { Id = id, Model = "m" });
            await Task.Delay(5);
        }
        Assert.Null(await store.GetAsync("a"));              // the one closest to expiry was evicted
        Assert.Equal(3, (await store.ListAsync(10)).Count);
        await store.TryAppendTokenAsync("d", new TokenEntry(0, 0));
        await store.TryAppendTokenAsync("d", new TokenEntry(1, 0));
        await Assert.ThrowsAsync<InvalidOperationException>(() => store.TryAppendTokenAsync("d", new TokenEntry(2, 0)));
    }
}

public sealed class RedisSessionStoreTests(RedisFixture fixture) : SessionStoreContract, IClassFixture<RedisFixture>
{
    protected override Task<ISessionStore?> CreateStoreAsync(TimeSpan ttl) =>
        Task.FromResult<ISessionStore?>(new RedisSessionStore(fixture.Require(), ttl, RedisFixture.Prefix()));

    [SkippableFact]
    public async Task Layout_explicit_entry_ids_and_expiry_on_every_key()
    {
        fixture.Require();
        var r = fixture.Redis.GetDatabase();
        string p = RedisFixture.Prefix();
        var store = new RedisSessionStore(fixture.Redis, TimeSpan.FromMinutes(10), p);
        await store.TryCreateAsync(new SessionInfo { Id = "x", Model = "m" });
        await store.TryAppendTokenAsync("x", new TokenEntry(0, 11, "a"));
        await store.TryAppendTokenAsync("x", new TokenEntry(1, 12));
        Assert.False(await store.TryAppendTokenAsync("x", new TokenEntry(1, 12)));
        Assert.Equal(["1-0", "2-0"], (await r.StreamRangeAsync(p + "tokens:x")).Select(e => (string)e.Id!));
        Assert.Equal("running", (string?)await r.HashGetAsync(p + "session:x", "status"));
        Assert.InRange((await r.KeyTimeToLiveAsync(p + "session:x"))!.Value.TotalMilliseconds, 1, 600_000);
        Assert.InRange((await r.KeyTimeToLiveAsync(p + "tokens:x"))!.Value.TotalMilliseconds, 1, 600_000);
        Assert.NotNull(await r.SortedSetScoreAsync(p + "sessions", "x"));
        // An emptied script cache (as after a restart) is refilled: the next write still runs.
        await r.ExecuteAsync("SCRIPT", "FLUSH");
        Assert.True(await store.TryAppendTokenAsync("x", new TokenEntry(2, 13)));
        Assert.True(await store.UpdateAsync("x", new SessionUpdate { GeneratedTokens = 3 }));
        // A log key holding the wrong type is a server error, not a silent "duplicate".
        await r.StringSetAsync(p + "tokens:y", "not a stream");
        await Assert.ThrowsAsync<RedisServerException>(() => store.TryAppendTokenAsync("y", new TokenEntry(0, 1)));
    }

    [SkippableFact]
    public async Task Creating_a_session_drops_expired_members_from_the_index_so_it_does_not_grow_forever()
    {
        fixture.Require();
        var r = fixture.Redis.GetDatabase();
        string p = RedisFixture.Prefix();
        // A TTL long enough that the two creations fall inside it on a loaded CI machine (at 300 ms a CI run
        // saw the second creation drop the first, already expired: 1 member where 2 were expected).
        var store = new RedisSessionStore(fixture.Redis, TimeSpan.FromMilliseconds(1500), p);
        await store.TryCreateAsync(new SessionInfo { Id = "old1", Model = "m" });
        await store.TryCreateAsync(new SessionInfo { Id = "old2", Model = "m" });
        Assert.Equal(2, await r.SortedSetLengthAsync(p + "sessions"));
        await Task.Delay(2500);                                 // both expired: their hashes are gone, their members not
        Assert.False(await r.KeyExistsAsync(p + "session:old1"));
        Assert.Equal(2, await r.SortedSetLengthAsync(p + "sessions"));
        await store.TryCreateAsync(new SessionInfo { Id = "new", Model = "m" });
        Assert.Equal(["new"], (await r.SortedSetRangeByRankAsync(p + "sessions")).Select(v => (string)v!));
    }

    [SkippableFact]
    public async Task Every_append_and_the_delete_notify_the_session_channel()
    {
        fixture.Require();
        string p = RedisFixture.Prefix();
        var store = new RedisSessionStore(fixture.Redis, TimeSpan.FromMinutes(10), p);
        var heard = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var queue = await fixture.Redis.GetSubscriber().SubscribeAsync(RedisChannel.Literal(p + "appended:n"));
        queue.OnMessage(m => heard.Enqueue(m.Message!));
        await store.TryCreateAsync(new SessionInfo { Id = "n", Model = "m" });
        await store.TryAppendTokenAsync("n", new TokenEntry(0, 1));
        Assert.False(await store.TryAppendTokenAsync("n", new TokenEntry(0, 1))); // refused: no notification
        await store.TryAppendTokenAsync("n", new TokenEntry(1, 2));
        await store.CompleteTokenLogAsync("n", "stop");
        await store.DeleteAsync("n");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (heard.Count < 4 && DateTime.UtcNow < deadline) await Task.Delay(10);
        await Task.Delay(100); // and nothing more arrives
        await queue.UnsubscribeAsync();
        Assert.Equal(["1-0", "2-0", "18446744073709551615-0", "deleted"], heard);
    }
}
