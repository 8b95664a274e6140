using System.Collections.Concurrent;
using Cluster.Redis.Connection;

namespace Cluster.Redis;

public sealed partial class RedisClient
{
    // A blocking command (XREAD BLOCK) holds its connection until data arrives: on the shared
    // pipelined connection it would stall every command queued behind it. So each one borrows a
    // dedicated connection from a small bounded pool.
    private readonly SemaphoreSlim _blockingSlots;
    private readonly ConcurrentBag<RedisConnection> _idleBlocking = new();

    /// <summary>
    /// Runs a blocking command on a dedicated connection and waits up to
    /// <paramref name="blockFor"/> plus the command timeout. If the caller cancels (or the wait times
    /// out) that connection is closed, which is the only way to end a server-side block early;
    /// otherwise it goes back to the pool.
    /// </summary>
    public async Task<RespValue> ExecuteBlockingAsync(RedisArg[] args, TimeSpan blockFor, CancellationToken ct = default)
    {
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        var wait = blockFor + _options.CommandTimeout;
        if (!await _blockingSlots.WaitAsync(wait, ct).ConfigureAwait(false))
            throw new RedisTimeoutException($"all {_options.MaxBlockingConnections} blocking connections to {_options} stayed busy for {wait.TotalMilliseconds:0} ms");
        RedisConnection? conn = null;
        bool reusable = false;
        try
        {
            while (conn is null && _idleBlocking.TryTake(out var idle))
            {
                if (idle.IsAlive) conn = idle;
                else await idle.DisposeAsync().ConfigureAwait(false);
            }
            conn ??= await RedisConnection.ConnectAsync(_options, ct).ConfigureAwait(false);
            var reply = await conn.SendAsync(args, wait, ct).ConfigureAwait(false);
            reusable = true;
            return reply;
        }
        catch (RedisServerException)
        {
            reusable = true;
            throw;
        }
        finally
        {
            if (conn is not null)
            {
                if (reusable && conn.IsAlive && !_disposed.IsCancellationRequested) _idleBlocking.Add(conn);
                else await conn.DisposeAsync().ConfigureAwait(false);
            }
            _blockingSlots.Release();
        }
    }

    private async ValueTask DisposeBlockingPoolAsync()
    {
        while (_idleBlocking.TryTake(out var conn)) await conn.DisposeAsync().ConfigureAwait(false);
    }
}
