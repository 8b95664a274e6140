using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace Cluster.Sessions;

/// <summary>
/// Sessions in Redis, through StackExchange.Redis. Per session: a hash <c>{prefix}session:{id}</c>
/// with the metadata and a stream <c>{prefix}tokens:{id}</c> with the token log; a sorted set
/// <c>{prefix}sessions</c> indexes live sessions by expiry time (Unix ms), which orders the listing
/// by last activity and lets expired members be dropped with one ZREMRANGEBYSCORE (every create and
/// every listing does). All keys expire
/// after the TTL without activity (create, update, append, complete); each of those is one Lua
/// script (<see cref="RedisSessionScripts"/>), so the write, the TTL refresh of both keys and the
/// index score change together.
/// <para>
/// Token entries get the explicit stream id <c>(index+1)-0</c>. Redis refuses an XADD whose id is
/// not greater than the stream's last id, so a retried append of an index already logged is
/// rejected by the server itself and can never be stored twice. Completion appends an end entry
/// with the largest possible id, after which every append is refused the same way. Every append
/// also PUBLISHes on <c>{prefix}appended:{id}</c>, which is what wakes followers (see
/// <see cref="FollowTokensAsync"/>).
/// </para>
/// </summary>
public sealed partial class RedisSessionStore : ISessionStore
{
    // The largest stream id (64-bit unsigned milliseconds part): nothing can be appended after it.
    private const string EndId = "18446744073709551615-0";

    private readonly IConnectionMultiplexer _redis;
    private readonly IDatabase _db;
    private readonly TimeSpan _ttl;
    private readonly string _prefix;
    private readonly ILogger _logger;

    /// <param name="redis">The process's shared multiplexer (see <see cref="RedisConnector"/>); not owned: the caller disposes it.</param>
    /// <param name="keyPrefix">Namespace of every key and channel, "llm:" by default (tests use their own).</param>
    public RedisSessionStore(IConnectionMultiplexer redis, TimeSpan ttl, string keyPrefix = "llm:", ILogger? logger = null)
    {
        if (ttl < TimeSpan.FromMilliseconds(1)) throw new ArgumentOutOfRangeException(nameof(ttl), "ttl must be at least 1 ms");
        _redis = redis;
        _db = redis.GetDatabase();
        _ttl = ttl;
        _prefix = keyPrefix;
        _logger = logger ?? NullLogger.Instance;
    }

    private RedisKey HashKey(string id) => _prefix + "session:" + id;
    private RedisKey LogKey(string id) => _prefix + "tokens:" + id;
    private RedisKey IndexKey => _prefix + "sessions";
    private string ChannelName(string id) => _prefix + "appended:" + id;
    private RedisKey[] Keys(string id) => [HashKey(id), LogKey(id), IndexKey];
    private long TtlMs => (long)_ttl.TotalMilliseconds;

    public Task<bool> TryCreateAsync(SessionInfo session, CancellationToken ct = default)
    {
        var now = DateTimeOffset.UtcNow;
        session = session with
        {
            CreatedAt = session.CreatedAt == default ? now : session.CreatedAt,
            UpdatedAt = session.UpdatedAt == default ? now : session.UpdatedAt,
        };
        return RunWriteScriptAsync(RedisSessionScripts.Create, session.Id, SessionHashCodec.ToFields(session), now);
    }

    public async Task<SessionInfo?> GetAsync(string sessionId, CancellationToken ct = default)
        => SessionHashCodec.FromFields(ToDictionary(await _db.HashGetAllAsync(HashKey(sessionId)).WaitAsync(ct).ConfigureAwait(false)));

    public Task<bool> UpdateAsync(string sessionId, SessionUpdate update, CancellationToken ct = default)
    {
        var now = DateTimeOffset.UtcNow;
        return RunWriteScriptAsync(RedisSessionScripts.Update, sessionId, SessionHashCodec.ToFields(update, now), now);
    }

    private Task<bool> RunWriteScriptAsync(string script, string id, List<KeyValuePair<string, string>> fields, DateTimeOffset now)
    {
        var args = new List<RedisValue>(3 + 2 * fields.Count) { TtlMs, (now + _ttl).ToUnixTimeMilliseconds(), id };
        foreach (var (k, v) in fields) { args.Add(k); args.Add(v); }
        return RedisSessionScripts.RunAsync(_db, script, Keys(id), [.. args]);
    }

    /// <summary>XADD with an explicit id plus the TTL/index refresh and the notification; false when Redis refused the id.</summary>
    private Task<bool> RunAppendScriptAsync(string id, string entryId, List<KeyValuePair<string, string>> fields)
    {
        var args = new List<RedisValue>(5 + 2 * fields.Count)
        {
            TtlMs, (DateTimeOffset.UtcNow + _ttl).ToUnixTimeMilliseconds(), id, entryId, ChannelName(id),
        };
        foreach (var (k, v) in fields) { args.Add(k); args.Add(v); }
        return RedisSessionScripts.RunAsync(_db, RedisSessionScripts.Append, Keys(id), [.. args]);
    }

    public Task<bool> DeleteAsync(string sessionId, CancellationToken ct = default)
        => RedisSessionScripts.RunAsync(_db, RedisSessionScripts.Delete, Keys(sessionId), [sessionId, ChannelName(sessionId)]);

    public async Task<IReadOnlyList<SessionInfo>> ListAsync(int limit, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        // Issued together (pipelined): the removal runs first on the server.
        var prune = _db.SortedSetRemoveRangeByScoreAsync(IndexKey, double.NegativeInfinity, now);
        var ids = await _db.SortedSetRangeByScoreAsync(IndexKey, now, double.PositiveInfinity, Exclude.Start, Order.Descending, 0, limit).WaitAsync(ct).ConfigureAwait(false);
        await prune.ConfigureAwait(false);
        var reads = ids.Select(id => _db.HashGetAllAsync(HashKey(id!))).ToList();
        var result = new List<SessionInfo>(ids.Length);
        var gone = new List<RedisValue>();
        for (int i = 0; i < ids.Length; i++)
        {
            var info = SessionHashCodec.FromFields(ToDictionary(await reads[i].WaitAsync(ct).ConfigureAwait(false)));
            if (info is null) gone.Add(ids[i]); else result.Add(info);
        }
        if (gone.Count > 0) await _db.SortedSetRemoveAsync(IndexKey, [.. gone]).ConfigureAwait(false);
        return result;
    }

    public Task<bool> TryAppendTokenAsync(string sessionId, TokenEntry token, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(token.Index);
        var fields = new List<KeyValuePair<string, string>>(3)
        {
            new("i", token.Index.ToString(CultureInfo.InvariantCulture)),
            new("t", token.TokenId.ToString(CultureInfo.InvariantCulture)),
        };
        if (token.Text is not null) fields.Add(new("s", token.Text));
        return RunAppendScriptAsync(sessionId, EntryId(token.Index), fields);
    }

    public async Task<TokenLogPage> ReadTokensAsync(string sessionId, long afterIndex, int maxCount, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        RedisValue start = afterIndex < 0 ? "-" : EntryId(afterIndex + 1);
        // One extra entry so that an end marker right after a full page is seen in this read.
        var raw = await _db.StreamRangeAsync(LogKey(sessionId), start, "+", maxCount + 1).WaitAsync(ct).ConfigureAwait(false);
        return ToPage(raw, maxCount);
    }

    public async Task CompleteTokenLogAsync(string sessionId, string finishReason, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(finishReason);
        // Refused when already complete: the first reason stands.
        if (!await RunAppendScriptAsync(sessionId, EndId, [new("end", finishReason)]).ConfigureAwait(false)) return;
        await UpdateAsync(sessionId, new SessionUpdate { FinishReason = finishReason }, ct).ConfigureAwait(false);
    }

    private static TokenLogPage ToPage(StreamEntry[] raw, int maxCount)
    {
        var tokens = new List<TokenEntry>(Math.Min(raw.Length, maxCount));
        foreach (var e in raw)
        {
            if (e.Id == EndId) return new TokenLogPage(tokens, true, e["end"]);
            if (tokens.Count == maxCount) break;
            tokens.Add(ToToken(e));
        }
        return new TokenLogPage(tokens, false, null);
    }

    private static TokenEntry ToToken(StreamEntry e)
    {
        var index = e["i"];
        var tokenId = e["t"];
        if (index.IsNull || tokenId.IsNull) throw new FormatException($"token entry {e.Id} lacks its index or token id");
        var text = e["s"];
        return new TokenEntry((long)index, (int)tokenId, text.IsNull ? null : (string?)text);
    }

    private static Dictionary<string, string> ToDictionary(HashEntry[] entries)
    {
        var d = new Dictionary<string, string>(entries.Length, StringComparer.Ordinal);
        foreach (var e in entries) d[e.Name!] = e.Value!;
        return d;
    }

    private static string EntryId(long index) => (index + 1).ToString(CultureInfo.InvariantCulture) + "-0";
}
