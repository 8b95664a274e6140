using System.Runtime.CompilerServices;

namespace Cluster.Redis;

// Connection and keyspace: PING, SCAN.
public sealed partial class RedisClient
{
    /// <summary>PING; returns the round-trip time.</summary>
    public async Task<TimeSpan> PingAsync(CancellationToken ct = default)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var r = await ExecuteAsync(["PING"], ct).ConfigureAwait(false);
        if (r.AsString() != "PONG") ThrowHelper.UnexpectedReply<bool>("PING", r);
        return System.Diagnostics.Stopwatch.GetElapsedTime(t0);
    }

    /// <summary>
    /// SCAN cursor MATCH pattern COUNT n, followed until the cursor comes back to 0. As Redis
    /// documents, a key may be returned more than once, and keys added meanwhile may be missed.
    /// </summary>
    public async IAsyncEnumerable<string> ScanAsync(string pattern = "*", int pageSize = 100, [EnumeratorCancellation] CancellationToken ct = default)
    {
        string cursor = "0";
        do
        {
            var r = await ExecuteAsync(["SCAN", cursor, "MATCH", pattern, "COUNT", pageSize], ct).ConfigureAwait(false);
            if (r.Type != RespType.Array || r.Items.Length != 2) ThrowHelper.UnexpectedReply<bool>("SCAN", r);
            cursor = r.Items[0].AsString()!;
            foreach (var key in r.Items[1].Items) yield return key.AsString()!;
        } while (cursor != "0");
    }
}
