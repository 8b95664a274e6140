using StackExchange.Redis;

namespace Cluster.Sessions;

/// <summary>
/// The Lua scripts behind <see cref="RedisSessionStore"/>'s writes. Each write is one script so that
/// the change, the TTL refresh of the session's keys, the listing index and the follower
/// notification happen together or not at all. StackExchange.Redis sends them by EVALSHA once the
/// server knows them and falls back to EVAL when its script cache was emptied (a restart).
/// KEYS are always: session hash, token stream, session index.
/// </summary>
internal static class RedisSessionScripts
{
    // ARGV: ttl ms, expiry score (Unix ms), session id, then field/value pairs.
    private const string WriteBody = """
        redis.call('HSET', KEYS[1], unpack(ARGV, 4))
        redis.call('PEXPIRE', KEYS[1], ARGV[1])
        redis.call('PEXPIRE', KEYS[2], ARGV[1])
        redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
        return 1
        """;

    /// <summary>
    /// Stores a new session; 0 when the hash exists. It also drops the index members whose session
    /// expired (score = expiry time, at most now = score - ttl): the hash and stream expire by
    /// themselves, but a sorted-set member does not, and without this the index grew by one member per
    /// session ever created unless someone listed the sessions (found by `llmctl bench soak`).
    /// </summary>
    public const string Create = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
        + "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[1]))\n" + WriteBody;

    /// <summary>Updates fields of an existing session; 0 when it does not exist.</summary>
    public const string Update = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n" + WriteBody;

    /// <summary>
    /// XADD with an explicit id, TTL refresh, index score, and a PUBLISH of the entry id on the
    /// session's channel (what wakes followers). ARGV: ttl ms, expiry score, session id, entry id,
    /// channel, then field/value pairs. Returns 0, and publishes nothing, when XADD refuses the id as
    /// not greater than the stream's last one (a retried or late append). Redis 7's refusal reads
    /// "ERR The ID specified in XADD is equal or smaller than the target stream top item"; other
    /// errors (e.g. WRONGTYPE) are passed on.
    /// </summary>
    public const string Append = """
        local r = redis.pcall('XADD', KEYS[2], ARGV[4], unpack(ARGV, 6))
        if type(r) == 'table' and r.err then
          if string.find(r.err, 'equal or smaller', 1, true) then return 0 end
          return redis.error_reply(r.err)
        end
        redis.call('PEXPIRE', KEYS[2], ARGV[1])
        if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1 then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3]) end
        redis.call('PUBLISH', ARGV[5], ARGV[4])
        return 1
        """;

    /// <summary>Removes the session, its log and its index entry and wakes followers (they find it gone). ARGV: session id, channel. Returns 1 when the session hash existed.</summary>
    public const string Delete = """
        local n = redis.call('DEL', KEYS[1])
        redis.call('DEL', KEYS[2])
        redis.call('ZREM', KEYS[3], ARGV[1])
        redis.call('PUBLISH', ARGV[2], 'deleted')
        return n
        """;

    public static async Task<bool> RunAsync(IDatabaseAsync db, string script, RedisKey[] keys, RedisValue[] args)
        => (long)await db.ScriptEvaluateAsync(script, keys, args).ConfigureAwait(false) == 1;
}
