namespace Cluster.Redis;

// Sorted sets: ZADD, ZREM, ZRANGE ... BYSCORE, ZREMRANGEBYSCORE, ZSCORE, ZCARD.
public sealed partial class RedisClient
{
    /// <summary>ZADD key score member: true when the member is new (an existing member gets the new score).</summary>
    public async Task<bool> ZAddAsync(string key, double score, string member, CancellationToken ct = default)
        => (await ExecuteAsync(["ZADD", key, score, member], ct).ConfigureAwait(false)).AsInt64() == 1;

    /// <summary>ZREM: how many of the members were removed.</summary>
    public async Task<long> ZRemAsync(string key, IEnumerable<string> members, CancellationToken ct = default)
    {
        RedisArg[] args = ["ZREM", key, .. members.Select(m => (RedisArg)m)];
        if (args.Length == 2) return 0;
        return (await ExecuteAsync(args, ct).ConfigureAwait(false)).AsInt64();
    }

    /// <summary>
    /// ZRANGE key min max BYSCORE [REV] LIMIT offset count (Redis 6.2+): members with min &lt;= score &lt;= max,
    /// lowest first, or highest first when <paramref name="descending"/>.
    /// </summary>
    public async Task<List<string>> ZRangeByScoreAsync(string key, double min, double max, bool descending = false,
        long offset = 0, long count = -1, CancellationToken ct = default)
    {
        // With REV the range is given from the high end (spec of ZRANGE: "start and stop are swapped").
        RedisArg[] args = descending
            ? ["ZRANGE", key, max, min, "BYSCORE", "REV", "LIMIT", offset, count]
            : ["ZRANGE", key, min, max, "BYSCORE", "LIMIT", offset, count];
        var reply = await ExecuteAsync(args, ct).ConfigureAwait(false);
        return reply.Items.Select(i => i.AsString()!).ToList();
    }

    /// <summary>ZREMRANGEBYSCORE key min max: how many members were removed.</summary>
    public async Task<long> ZRemRangeByScoreAsync(string key, double min, double max, CancellationToken ct = default)
        => (await ExecuteAsync(["ZREMRANGEBYSCORE", key, min, max], ct).ConfigureAwait(false)).AsInt64();

    /// <summary>ZSCORE: the member's score, or null when absent.</summary>
    public async Task<double?> ZScoreAsync(string key, string member, CancellationToken ct = default)
    {
        var r = await ExecuteAsync(["ZSCORE", key, member], ct).ConfigureAwait(false);
        return r.IsNull ? null : r.AsDouble();
    }

    /// <summary>ZCARD: number of members.</summary>
    public async Task<long> ZCardAsync(string key, CancellationToken ct = default)
        => (await ExecuteAsync(["ZCARD", key], ct).ConfigureAwait(false)).AsInt64();
}
