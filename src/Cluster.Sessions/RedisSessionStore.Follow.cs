using System.Globalization;
using System.Runtime.CompilerServices;
using StackExchange.Redis;

namespace Cluster.Sessions;

/// <summary>
/// Following a live token log. StackExchange.Redis has no blocking reads (an XREAD BLOCK would stall
/// the connection every caller shares), so a follower subscribes to the session's channel, which
/// every append script PUBLISHes to, and then reads with non-blocking XREAD from its last entry id
/// whenever a notification wakes it. A short poll is the safety net for what pub/sub does not carry:
/// notifications lost while the connection was down, and expiry, which nothing announces.
/// </summary>
public sealed partial class RedisSessionStore
{
    private const int FollowPageSize = 512;

    /// <summary>How long a follower waits for a notification before reading anyway (the safety-net poll).</summary>
    public TimeSpan FollowPollInterval { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// How long a follower keeps retrying while Redis is unreachable (its multiplexer reconnects by
    /// itself, ~1 s after a restart); past it the connection error is thrown to the caller.
    /// </summary>
    public TimeSpan FollowOutageLimit { get; init; } = TimeSpan.FromSeconds(30);

    public async IAsyncEnumerable<TokenEntry> FollowTokensAsync(string sessionId, long afterIndex, [EnumeratorCancellation] CancellationToken ct = default)
    {
        var key = LogKey(sessionId);
        var channel = RedisChannel.Literal(ChannelName(sessionId));
        var wake = new WakeSignal();
        Action<RedisChannel, RedisValue> onNotified = (_, _) => wake.Set();
        var subscriber = _redis.GetSubscriber();
        try
        {
            // Subscribed before the first read: an append that read misses publishes after it, to us.
            // Inside the try: a subscribe that fails may still have registered the handler locally.
            await RetryWhileUnreachableAsync(sessionId, afterIndex.ToString(CultureInfo.InvariantCulture), () => subscriber.SubscribeAsync(channel, onNotified), ct).ConfigureAwait(false);
            RedisValue lastId = afterIndex < 0 ? "0-0" : EntryId(afterIndex);
            while (true)
            {
                // Taken before the read, so a notification that arrives during the read is not lost.
                var notified = wake.Next;
                var entries = await RetryWhileUnreachableAsync(sessionId, lastId!, () => _db.StreamReadAsync(key, lastId, FollowPageSize), ct).ConfigureAwait(false);
                foreach (var e in entries)
                {
                    if (e.Id == EndId) yield break;
                    lastId = e.Id;
                    yield return ToToken(e);
                }
                if (entries.Length == FollowPageSize) continue; // more already logged: no need to wait
                if (entries.Length == 0 && !await SessionExistsAsync(sessionId, lastId!, ct).ConfigureAwait(false)) yield break;
                await Task.WhenAny(notified, Task.Delay(FollowPollInterval, ct)).ConfigureAwait(false);
                ct.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            // Fire and forget: an unsubscribe must not hold up (or fail) the end of a follow while
            // Redis is down; the multiplexer drops the handler locally at once either way.
            _ = subscriber.UnsubscribeAsync(channel, onNotified, CommandFlags.FireAndForget);
        }
    }

    /// <summary>True while the session's hash or log exists (false: deleted or expired, the follow ends).</summary>
    private async Task<bool> SessionExistsAsync(string sessionId, string lastId, CancellationToken ct)
        => await RetryWhileUnreachableAsync(sessionId, lastId, () => _db.KeyExistsAsync([HashKey(sessionId), LogKey(sessionId)]), ct).ConfigureAwait(false) > 0;

    /// <summary>
    /// Runs a read, retrying connection failures and timeouts for up to <see cref="FollowOutageLimit"/>:
    /// every read restarts from the follower's last id, so a retry can neither skip nor repeat an entry.
    /// </summary>
    private async Task<T> RetryWhileUnreachableAsync<T>(string sessionId, string lastId, Func<Task<T>> read, CancellationToken ct)
    {
        DateTime? since = null; // start of the current outage
        while (true)
        {
            try
            {
                var result = await read().WaitAsync(ct).ConfigureAwait(false);
                if (since is not null) RedisSessionStoreLog.FollowRecovered(_logger, sessionId, lastId);
                return result;
            }
            catch (Exception e) when (e is RedisConnectionException or RedisTimeoutException
                && (since ?? DateTime.UtcNow) + FollowOutageLimit > DateTime.UtcNow)
            {
                // Once per outage, not once per retry.
                if (since is null) RedisSessionStoreLog.FollowRetrying(_logger, sessionId, e.Message, lastId);
                since ??= DateTime.UtcNow;
                await Task.Delay(FollowPollInterval, ct).ConfigureAwait(false);
            }
        }
    }

    private Task RetryWhileUnreachableAsync(string sessionId, string lastId, Func<Task> action, CancellationToken ct)
        => RetryWhileUnreachableAsync(sessionId, lastId, async () => { await action().ConfigureAwait(false); return true; }, ct);
}
