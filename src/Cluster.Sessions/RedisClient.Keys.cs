namespace Cluster.Redis;

/// <summary>When SET writes: always, only if the key is missing (NX), or only if it exists (XX).</summary>
public enum SetCondition { Always, IfNotExists, IfExists }

// Keys and strings: GET, SET, DEL, EXISTS, EXPIRE/PEXPIRE, TTL/PTTL.
public sealed partial class RedisClient
{
    /// <summary>GET: the value as UTF-8 text, or null when the key does not exist.</summary>
    public async Task<string?> GetAsync(string key, CancellationToken ct = default)
        => (await ExecuteAsync(["GET", key], ct).ConfigureAwait(false)).AsString();

    /// <summary>GET: the raw value bytes, or null when the key does not exist.</summary>
    public async Task<byte[]?> GetBytesAsync(string key, CancellationToken ct = default)
    {
        var r = await ExecuteAsync(["GET", key], ct).ConfigureAwait(false);
        return r.IsNull ? null : r.Bytes.ToArray();
    }

    /// <summary>
    /// SET with an optional expiry (sent as EX when it is whole seconds, else PX) and condition.
    /// Returns false when NX/XX prevented the write (the server answers nil).
    /// </summary>
    public async Task<bool> SetAsync(string key, RedisArg value, TimeSpan? expiry = null, SetCondition when = SetCondition.Always, CancellationToken ct = default)
    {
        var args = new List<RedisArg>(6) { "SET", key, value };
        if (expiry is { } ttl)
        {
            if (ttl <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(expiry), "expiry must be positive");
            if (ttl.Ticks % TimeSpan.TicksPerSecond == 0) { args.Add("EX"); args.Add((long)ttl.TotalSeconds); }
            else { args.Add("PX"); args.Add(Math.Max(1L, (long)ttl.TotalMilliseconds)); }
        }
        if (when == SetCondition.IfNotExists) args.Add("NX");
        else if (when == SetCondition.IfExists) args.Add("XX");
        var r = await ExecuteAsync([.. args], ct).ConfigureAwait(false);
        return !r.IsNull;
    }

    /// <summary>DEL: how many of the keys existed and were removed.</summary>
    public async Task<long> DeleteAsync(params string[] keys)
        => (await ExecuteAsync(["DEL", .. keys.Select(k => (RedisArg)k)]).ConfigureAwait(false)).AsInt64();

    /// <summary>EXISTS: how many of the keys exist (a key named twice counts twice, as in Redis).</summary>
    public async Task<long> ExistsAsync(params string[] keys)
        => (await ExecuteAsync(["EXISTS", .. keys.Select(k => (RedisArg)k)]).ConfigureAwait(false)).AsInt64();

    /// <summary>EXPIRE in whole seconds; false when the key does not exist.</summary>
    public async Task<bool> ExpireAsync(string key, long seconds, CancellationToken ct = default)
        => (await ExecuteAsync(["EXPIRE", key, seconds], ct).ConfigureAwait(false)).AsInt64() == 1;

    /// <summary>PEXPIRE in milliseconds; false when the key does not exist.</summary>
    public async Task<bool> PExpireAsync(string key, long milliseconds, CancellationToken ct = default)
        => (await ExecuteAsync(["PEXPIRE", key, milliseconds], ct).ConfigureAwait(false)).AsInt64() == 1;

    /// <summary>TTL in seconds: -1 when the key has no expiry, -2 when it does not exist.</summary>
    public async Task<long> TtlAsync(string key, CancellationToken ct = default)
        => (await ExecuteAsync(["TTL", key], ct).ConfigureAwait(false)).AsInt64();

    /// <summary>PTTL in milliseconds: -1 when the key has no expiry, -2 when it does not exist.</summary>
    public async Task<long> PTtlAsync(string key, CancellationToken ct = default)
        => (await ExecuteAsync(["PTTL", key], ct).ConfigureAwait(false)).AsInt64();
}
