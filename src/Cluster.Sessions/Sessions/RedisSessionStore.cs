using System.Globalization;
using System.Runtime.CompilerServices;

namespace Cluster.Redis.Sessions;

/// <summary>
/// Sessions in Redis. Per session: a hash <c>{prefix}session:{id}</c> with the metadata and a
/// stream <c>{prefix}tokens:{id}</c> with the token log; a sorted set <c>{prefix}sessions</c>
/// indexes live sessions by expiry time (Unix ms), which orders the listing by last activity and
/// lets expired members be dropped with one ZREMRANGEBYSCORE. All keys expire after the TTL
/// without activity (create, update, append, complete); each of those is one Lua script, so the
/// write, the TTL refresh of both keys and the index score change together.
/// <para>
/// Token entries get the explicit stream id <c>(index+1)-0</c>. Redis refuses an XADD whose id is
/// not greater than the stream's last id, so a retried append of an index already logged is
/// rejected by the server itself and can never be stored twice. Completion appends an end entry
/// with the largest possible id, after which every append is refused the same way.
/// </para>
/// </summary>
public sealed class RedisSessionStore : ISessionStore
{
    // The largest stream id (64-bit unsigned milliseconds part): nothing can be appended after it.
    private const string EndId = "18446744073709551615-0";
    private const int FollowPageSize = 512;

    // KEYS: hash, stream, index. ARGV: ttl ms, expiry score (Unix ms), session id, then field/value pairs.
    private const string WriteBody = """
        redis.call('HSET', KEYS[1], unpack(ARGV, 4))
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        redis.call('PEXPIRE', KEYS[2], ARGV[1])
        redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
        return 1
        """;
    private static readonly RedisScript CreateScript = new("if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n" + WriteBody);
    private static readonly RedisScript UpdateScript = new("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n" + WriteBody);

    // Same KEYS; ARGV: ttl ms, expiry score, session id, entry id, then field/value pairs. Returns 0
    // when XADD refuses the id as not greater than the last one (a retried or late append).
    // Redis 7's refusal reads "ERR The ID specified in XADD is equal or smaller than the target
    // stream top item"; other errors (e.g. WRONGTYPE) are passed on.
    private static readonly RedisScript AppendScript = new("""
        local r = redis.pcall('XADD', KEYS[2], ARGV[4], unpack(ARGV, 5))
        if type(r) == 'table' and r.err then
          if string.find(r.err, 'equal or smaller', 1, true) then return 0 end
          return redis.error_reply(r.err)
        end
        redis.call('PEXPIRE', KEYS[2], ARGV[1])
        if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1 then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3]) end
        return 1
        """);

    private readonly RedisClient _redis;
    private readonly TimeSpan _ttl;
    private readonly string _prefix;

    /// <param name="keyPrefix">Namespace of every key, "llm:" by default (tests use their own).</param>
    public RedisSessionStore(RedisClient redis, TimeSpan ttl, string keyPrefix = "llm:")
    {
        if (ttl < TimeSpan.FromMilliseconds(1)) throw new ArgumentOutOfRangeException(nameof(ttl), "ttl must be at least 1 ms");
        _redis = redis;
        _ttl = ttl;
        _prefix = keyPrefix;
    }

    private string HashKey(string id) => _prefix + "session:" + id;
    private string LogKey(string id) => _prefix + "tokens:" + id;
    private string IndexKey => _prefix + "sessions";
    private long TtlMs => (long)_ttl.TotalMilliseconds;

    public async Task<bool> TryCreateAsync(SessionInfo session, CancellationToken ct = default)
    {
        var now = DateTimeOffset.UtcNow;
        session = session with
        {
            CreatedAt = session.CreatedAt == default ? now : session.CreatedAt,
            UpdatedAt = session.UpdatedAt == default ? now : session.UpdatedAt,
        };
        return await RunWriteScriptAsync(CreateScript, session.Id, SessionHashCodec.ToFields(session), now, ct).ConfigureAwait(false);
    }

    public async Task<SessionInfo?> GetAsync(string sessionId, CancellationToken ct = default)
        => SessionHashCodec.FromFields(await _redis.HGetAllAsync(HashKey(sessionId), ct).ConfigureAwait(false));

    public Task<bool> UpdateAsync(string sessionId, SessionUpdate update, CancellationToken ct = default)
    {
        var now = DateTimeOffset.UtcNow;
        return RunWriteScriptAsync(UpdateScript, sessionId, SessionHashCodec.ToFields(update, now), now, ct);
    }

    private async Task<bool> RunWriteScriptAsync(RedisScript script, string id, List<KeyValuePair<string, string>> fields, DateTimeOffset now, CancellationToken ct)
    {
        var args = new List<RedisArg>(3 + 2 * fields.Count) { TtlMs, (now + _ttl).ToUnixTimeMilliseconds(), id };
        foreach (var (k, v) in fields) { args.Add(k); args.Add(v); }
        return (await _redis.EvalAsync(script, [HashKey(id), LogKey(id), IndexKey], args, ct).ConfigureAwait(false)).AsInt64() == 1;
    }

    /// <summary>XADD with an explicit id plus the TTL/index refresh; false when Redis refused the id.</summary>
    private async Task<bool> RunAppendScriptAsync(string id, string entryId, List<KeyValuePair<string, string>> fields, CancellationToken ct)
    {
        var args = new List<RedisArg>(4 + 2 * fields.Count)
        {
            TtlMs, (DateTimeOffset.UtcNow + _ttl).ToUnixTimeMilliseconds(), id, entryId,
        };
        foreach (var (k, v) in fields) { args.Add(k); args.Add(v); }
        return (await _redis.EvalAsync(AppendScript, [HashKey(id), LogKey(id), IndexKey], args, ct).ConfigureAwait(false)).AsInt64() == 1;
    }

    public async Task<bool> DeleteAsync(string sessionId, CancellationToken ct = default)
    {
        // Issued together: they share one pipelined round trip.
        var hash = _redis.ExecuteAsync(["DEL", HashKey(sessionId)], ct);
        var log = _redis.ExecuteAsync(["DEL", LogKey(sessionId)], ct);
        var index = _redis.ZRemAsync(IndexKey, [sessionId], ct);
        await Task.WhenAll(hash, log, index).ConfigureAwait(false);
        return (await hash.ConfigureAwait(false)).AsInt64() == 1;
    }

    public async Task<IReadOnlyList<SessionInfo>> ListAsync(int limit, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        await _redis.ZRemRangeByScoreAsync(IndexKey, double.NegativeInfinity, now, ct).ConfigureAwait(false);
        var ids = await _redis.ZRangeByScoreAsync(IndexKey, now, double.PositiveInfinity, descending: true, 0, limit, ct).ConfigureAwait(false);
        var reads = ids.Select(id => _redis.HGetAllAsync(HashKey(id), ct)).ToList();
        var result = new List<SessionInfo>(ids.Count);
        var gone = new List<string>();
        for (int i = 0; i < ids.Count; i++)
        {
            var info = SessionHashCodec.FromFields(await reads[i].ConfigureAwait(false));
            if (info is null) gone.Add(ids[i]); else result.Add(info);
        }
        if (gone.Count > 0) await _redis.ZRemAsync(IndexKey, gone, ct).ConfigureAwait(false);
        return result;
    }

    public async Task<bool> TryAppendTokenAsync(string sessionId, TokenEntry token, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(token.Index);
        var fields = new List<KeyValuePair<string, string>>(3)
        {
            new("i", token.Index.ToString(CultureInfo.InvariantCulture)),
            new("t", token.TokenId.ToString(CultureInfo.InvariantCulture)),
        };
        if (token.Text is not null) fields.Add(new("s", token.Text));
        return await RunAppendScriptAsync(sessionId, EntryId(token.Index), fields, ct).ConfigureAwait(false);
    }

    public async Task<TokenLogPage> ReadTokensAsync(string sessionId, long afterIndex, int maxCount, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        string start = afterIndex < 0 ? "-" : EntryId(afterIndex + 1);
        // One extra entry so that an end marker right after a full page is seen in this read.
        var raw = await _redis.XRangeAsync(LogKey(sessionId), start, "+", maxCount + 1, ct).ConfigureAwait(false);
        return ToPage(raw, maxCount);
    }

    public async IAsyncEnumerable<TokenEntry> FollowTokensAsync(string sessionId, long afterIndex, [EnumeratorCancellation] CancellationToken ct = default)
    {
        string key = LogKey(sessionId);
        string lastId = afterIndex < 0 ? "0-0" : EntryId(afterIndex);
        while (true)
        {
            // XREAD BLOCK answers at once when entries exist after lastId, so one call serves both
            // the catch-up and the live phase. It runs on a dedicated connection (blocking lane).
            var reply = await _redis.XReadAsync([(key, lastId)], FollowPageSize, TimeSpan.FromSeconds(1), ct).ConfigureAwait(false);
            if (reply.Count == 0)
            {
                if (await _redis.ExistsAsync(HashKey(sessionId), key).ConfigureAwait(false) == 0) yield break;
                continue;
            }
            foreach (var e in reply[0].Entries)
            {
                if (e.Id == EndId) yield break;
                lastId = e.Id;
                yield return ToToken(e);
            }
        }
    }

    public async Task CompleteTokenLogAsync(string sessionId, string finishReason, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(finishReason);
        // Refused when already complete: the first reason stands.
        if (!await RunAppendScriptAsync(sessionId, EndId, [new("end", finishReason)], ct).ConfigureAwait(false)) return;
        await UpdateAsync(sessionId, new SessionUpdate { FinishReason = finishReason }, ct).ConfigureAwait(false);
    }

    private static TokenLogPage ToPage(List<StreamEntry> raw, int maxCount)
    {
        var tokens = new List<TokenEntry>(Math.Min(raw.Count, maxCount));
        foreach (var e in raw)
        {
            if (e.Id == EndId) return new TokenLogPage(tokens, true, e["end"]);
            if (tokens.Count == maxCount) break;
            tokens.Add(ToToken(e));
        }
        return new TokenLogPage(tokens, false, null);
    }

    private static TokenEntry ToToken(StreamEntry e) => new(
        long.Parse(e["i"] ?? throw new RedisProtocolException($"token entry {e.Id} has no index"), CultureInfo.InvariantCulture),
        int.Parse(e["t"] ?? throw new RedisProtocolException($"token entry {e.Id} has no token id"), CultureInfo.InvariantCulture),
        e["s"]);

    private static string EntryId(long index) => (index + 1).ToString(CultureInfo.InvariantCulture) + "-0";
}
