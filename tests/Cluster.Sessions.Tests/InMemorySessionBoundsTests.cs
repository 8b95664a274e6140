using Cluster.Sessions;
using Xunit;

namespace Cluster.Sessions.Tests;

/// <summary>
/// The in-process store's memory bounds: which session goes first past the session count or the byte
/// estimate (expired, then finished in order of finishing, then running closest to expiry), and that
/// expired sessions are freed by the periodic sweep without being looked up. Time is a manual clock.
/// </summary>
public sealed class InMemorySessionBoundsTests
{
    private sealed class ManualTime : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 4, 0, 0, 0, TimeSpan.Zero);
        public override DateTimeOffset GetUtcNow() => Now;
        public void Advance(double seconds) => Now += TimeSpan.FromSeconds(seconds);
    }

    private static SessionInfo Session(string id) => new() { Id = id, Model = "m" };

    [Fact]
    public async Task Past_the_session_bound_finished_sessions_go_first_in_finish_order_then_the_running_one_closest_to_expiry()
    {
        var time = new ManualTime();
        var store = new InMemorySessionStore(TimeSpan.FromMinutes(10), maxSessions: 3, time: time);
        foreach (var id in new[] { "a", "b", "c" })
        {
            await store.TryCreateAsync(Session(id));
            time.Advance(1);
        }
        await store.CompleteTokenLogAsync("c", "stop"); // finished first
        time.Advance(1);
        await store.CompleteTokenLogAsync("a", "stop"); // finished second
        time.Advance(1);
        // c is touched last, so by expiry it would now be the last to go; b (running) expires first of all.
        Assert.True(await store.UpdateAsync("c", new SessionUpdate { GeneratedTokens = 1 }));
        time.Advance(1);

        await store.TryCreateAsync(Session("d"));
        Assert.Equal(["a", "b", "d"], await Present(store, "a", "b", "c", "d"));
        time.Advance(1);
        await store.TryCreateAsync(Session("e"));
        Assert.Equal(["b", "d", "e"], await Present(store, "a", "b", "c", "d", "e"));
        time.Advance(1);
        // Nothing finished is left: the running session written longest ago (b) goes.
        await store.TryCreateAsync(Session("f"));
        Assert.Equal(["d", "e", "f"], await Present(store, "b", "d", "e", "f"));
        Assert.Equal(3, store.Evicted);
    }

    [Fact]
    public async Task Past_the_byte_bound_the_oldest_finished_session_goes_and_the_one_being_written_never()
    {
        // Hand-computed footprints: a session "a"/"b" with model "m" and policy "dense" is
        // 256 (slot) + 160 (record) + 26 (id) + 26 (model) + 34 (policy) = 502 bytes; "stop" as its
        // finish reason adds 24 + 8 = 32; a token with text "ab" is 24 + 24 + 4 = 52.
        var store = new InMemorySessionStore(TimeSpan.FromMinutes(10), maxBytes: 1200, time: new ManualTime());
        await store.TryCreateAsync(Session("a"));
        Assert.Equal(502, store.EstimatedBytes);
        await store.TryCreateAsync(Session("b"));
        await store.CompleteTokenLogAsync("a", "stop");
        Assert.Equal(1036, store.EstimatedBytes);
        for (int i = 0; i < 3; i++) await store.TryAppendTokenAsync("b", new TokenEntry(i, 7, "ab"));
        Assert.Equal(1192, store.EstimatedBytes); // within the bound: nothing evicted
        Assert.NotNull(await store.GetAsync("a"));

        await store.TryAppendTokenAsync("b", new TokenEntry(3, 7, "ab")); // 1244 > 1200: a goes
        Assert.Null(await store.GetAsync("a"));
        Assert.Equal(502 + 4 * 52, store.EstimatedBytes);

        // One session alone past the bound is kept (it is the one being written), with its whole log.
        for (int i = 4; i < 20; i++) Assert.True(await store.TryAppendTokenAsync("b", new TokenEntry(i, 7, "ab")));
        Assert.Equal(20, (await store.ReadTokensAsync("b", -1, 100)).Entries.Count);
        Assert.Equal(502 + 20 * 52, store.EstimatedBytes);
        Assert.Equal(1, store.Evicted);
    }

    [Fact]
    public async Task Expired_sessions_are_swept_and_their_bytes_given_back_without_being_looked_up()
    {
        var time = new ManualTime();
        var store = new InMemorySessionStore(TimeSpan.FromSeconds(30), time: time);
        for (int i = 0; i < 5; i++)
        {
            await store.TryCreateAsync(Session($"s{i}"));
            await store.TryAppendTokenAsync($"s{i}", new TokenEntry(0, 1, "x"));
            await store.CompleteTokenLogAsync($"s{i}", "length");
        }
        Assert.Equal(5, store.Count);
        time.Advance(29);
        await store.GetAsync("other"); // a sweep runs (29 s > the 5 s interval) but nothing has expired
        Assert.Equal(5, store.Count);
        time.Advance(2);
        await store.GetAsync("other"); // expired now, but the next sweep is not due until 34 s
        Assert.Equal(5, store.Count);
        time.Advance(4);
        await store.GetAsync("other"); // any call after the sweep interval sweeps
        Assert.Equal(0, store.Count);
        Assert.Equal(0, store.EstimatedBytes);
        Assert.Equal(0, store.Evicted); // expiry is not eviction
    }

    private static async Task<List<string>> Present(InMemorySessionStore store, params string[] ids)
    {
        var present = new List<string>();
        foreach (var id in ids)
            if (await store.GetAsync(id) is not null) present.Add(id);
        return present;
    }
}
