namespace Cluster.Redis;

/// <summary>One stream entry: its id ("ms-seq") and its field/value pairs in stored order.</summary>
public sealed record StreamEntry(string Id, IReadOnlyList<KeyValuePair<string, string>> Fields)
{
    /// <summary>The value of the first field named <paramref name="field"/>, or null.</summary>
    public string? this[string field] => Fields.FirstOrDefault(f => f.Key == field).Value;
}

// Streams: XADD, XRANGE, XREAD (optionally BLOCK), XLEN, XTRIM.
public sealed partial class RedisClient
{
    /// <summary>
    /// XADD [MAXLEN [~] n] id field value ... Returns the entry id. An explicit id that is not
    /// greater than the stream's last id is refused by Redis with an error reply
    /// (<see cref="RedisServerException"/>), which makes explicit ids an idempotence guard.
    /// </summary>
    public async Task<string> XAddAsync(string key, string id, IEnumerable<KeyValuePair<string, string>> fields,
        long? maxLength = null, bool approximateTrim = true, CancellationToken ct = default)
    {
        var args = new List<RedisArg> { "XADD", key };
        if (maxLength is { } max)
        {
            args.Add("MAXLEN");
            if (approximateTrim) args.Add("~");
            args.Add(max);
        }
        args.Add(id);
        int before = args.Count;
        foreach (var (f, v) in fields) { args.Add(f); args.Add(v); }
        if (args.Count == before) throw new ArgumentException("XADD needs at least one field", nameof(fields));
        return (await ExecuteAsync([.. args], ct).ConfigureAwait(false)).AsString()!;
    }

    /// <summary>XRANGE key start end [COUNT n]; "-" and "+" are the extremes, "(id" is exclusive (Redis 6.2+).</summary>
    public async Task<List<StreamEntry>> XRangeAsync(string key, string start = "-", string end = "+", int? count = null, CancellationToken ct = default)
    {
        RedisArg[] args = count is { } n ? ["XRANGE", key, start, end, "COUNT", n] : ["XRANGE", key, start, end];
        return ToEntries(await ExecuteAsync(args, ct).ConfigureAwait(false), "XRANGE");
    }

    /// <summary>
    /// XREAD [COUNT n] [BLOCK ms] STREAMS key... id...: the entries after each id. With
    /// <paramref name="block"/> the call runs on a dedicated connection (see ExecuteBlockingAsync)
    /// and returns an empty list if nothing arrived in time. Streams with no new entries are omitted.
    /// </summary>
    public async Task<List<(string Key, List<StreamEntry> Entries)>> XReadAsync(
        IReadOnlyList<(string Key, string AfterId)> streams, int? count = null, TimeSpan? block = null, CancellationToken ct = default)
    {
        if (streams.Count == 0) throw new ArgumentException("XREAD needs at least one stream", nameof(streams));
        var args = new List<RedisArg> { "XREAD" };
        if (count is { } c) { args.Add("COUNT"); args.Add(c); }
        if (block is { } b) { args.Add("BLOCK"); args.Add(Math.Max(1L, (long)b.TotalMilliseconds)); }
        args.Add("STREAMS");
        foreach (var s in streams) args.Add(s.Key);
        foreach (var s in streams) args.Add(s.AfterId);
        var reply = block is { } wait
            ? await ExecuteBlockingAsync([.. args], wait, ct).ConfigureAwait(false)
            : await ExecuteAsync([.. args], ct).ConfigureAwait(false);
        var result = new List<(string, List<StreamEntry>)>();
        if (reply.IsNull) return result;
        // RESP2: [[key, entries], ...]; RESP3: a map key -> entries.
        if (reply.Type == RespType.Map)
        {
            for (int i = 0; i < reply.Items.Length; i += 2)
                result.Add((reply.Items[i].AsString()!, ToEntries(reply.Items[i + 1], "XREAD")));
            return result;
        }
        if (reply.Type != RespType.Array) return ThrowHelper.UnexpectedReply<List<(string, List<StreamEntry>)>>("XREAD", reply);
        foreach (var pair in reply.Items)
        {
            if (pair.Items.Length != 2) return ThrowHelper.UnexpectedReply<List<(string, List<StreamEntry>)>>("XREAD", pair);
            result.Add((pair.Items[0].AsString()!, ToEntries(pair.Items[1], "XREAD")));
        }
        return result;
    }

    /// <summary>XLEN: number of entries (0 for a missing key).</summary>
    public async Task<long> XLenAsync(string key, CancellationToken ct = default)
        => (await ExecuteAsync(["XLEN", key], ct).ConfigureAwait(false)).AsInt64();

    /// <summary>XTRIM key MAXLEN [~] n: how many entries were removed (approximate trimming may remove fewer).</summary>
    public async Task<long> XTrimAsync(string key, long maxLength, bool approximate = false, CancellationToken ct = default)
    {
        RedisArg[] args = approximate ? ["XTRIM", key, "MAXLEN", "~", maxLength] : ["XTRIM", key, "MAXLEN", maxLength];
        return (await ExecuteAsync(args, ct).ConfigureAwait(false)).AsInt64();
    }

    private static List<StreamEntry> ToEntries(RespValue reply, string command)
    {
        if (reply.IsNull) return [];
        if (reply.Type != RespType.Array) return ThrowHelper.UnexpectedReply<List<StreamEntry>>(command, reply);
        var entries = new List<StreamEntry>(reply.Items.Length);
        foreach (var e in reply.Items)
        {
            // Each entry is [id, [field, value, ...]]; the field list is nil for an entry deleted meanwhile.
            if (e.Type != RespType.Array || e.Items.Length != 2) return ThrowHelper.UnexpectedReply<List<StreamEntry>>(command, e);
            var raw = e.Items[1].Items;
            var fields = new KeyValuePair<string, string>[raw.Length / 2];
            for (int i = 0; i < fields.Length; i++)
                fields[i] = new(raw[2 * i].AsString()!, raw[2 * i + 1].AsString() ?? "");
            entries.Add(new StreamEntry(e.Items[0].AsString()!, fields));
        }
        return entries;
    }
}
