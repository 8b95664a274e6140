namespace Cluster.Redis;

// Hashes: HSET, HGET, HGETALL, HINCRBY.
public sealed partial class RedisClient
{
    /// <summary>HSET with several fields; returns how many fields were new.</summary>
    public async Task<long> HSetAsync(string key, IEnumerable<KeyValuePair<string, string>> fields, CancellationToken ct = default)
    {
        var args = new List<RedisArg> { "HSET", key };
        foreach (var (f, v) in fields) { args.Add(f); args.Add(v); }
        if (args.Count == 2) throw new ArgumentException("HSET needs at least one field", nameof(fields));
        return (await ExecuteAsync([.. args], ct).ConfigureAwait(false)).AsInt64();
    }

    /// <summary>HSET of one field; true when the field was new.</summary>
    public async Task<bool> HSetAsync(string key, string field, RedisArg value, CancellationToken ct = default)
        => (await ExecuteAsync(["HSET", key, field, value], ct).ConfigureAwait(false)).AsInt64() == 1;

    /// <summary>HGET: the field's value, or null when the key or field is missing.</summary>
    public async Task<string?> HGetAsync(string key, string field, CancellationToken ct = default)
        => (await ExecuteAsync(["HGET", key, field], ct).ConfigureAwait(false)).AsString();

    /// <summary>HGETALL: every field; empty when the key does not exist.</summary>
    public async Task<Dictionary<string, string>> HGetAllAsync(string key, CancellationToken ct = default)
        => ToDictionary(await ExecuteAsync(["HGETALL", key], ct).ConfigureAwait(false), "HGETALL");

    /// <summary>HINCRBY: the field's value after adding <paramref name="delta"/> (a missing field counts as 0).</summary>
    public async Task<long> HIncrByAsync(string key, string field, long delta, CancellationToken ct = default)
        => (await ExecuteAsync(["HINCRBY", key, field, delta], ct).ConfigureAwait(false)).AsInt64();

    /// <summary>A RESP3 map or a RESP2 flat array of pairs, as a dictionary of strings.</summary>
    internal static Dictionary<string, string> ToDictionary(RespValue reply, string command)
    {
        if (reply.IsNull) return new Dictionary<string, string>();
        if (reply.Type is not (RespType.Map or RespType.Array) || reply.Items.Length % 2 != 0)
            return ThrowHelper.UnexpectedReply<Dictionary<string, string>>(command, reply);
        var result = new Dictionary<string, string>(reply.Items.Length / 2, StringComparer.Ordinal);
        for (int i = 0; i < reply.Items.Length; i += 2)
            result[reply.Items[i].AsString()!] = reply.Items[i + 1].AsString() ?? "";
        return result;
    }
}
