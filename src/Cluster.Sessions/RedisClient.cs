using Cluster.Redis.Connection;

namespace Cluster.Redis;

/// <summary>
/// A Redis client over one multiplexed, pipelined connection (safe for any number of concurrent
/// callers), plus a small pool of dedicated connections for blocking commands (see
/// RedisClient.Blocking.cs). When the connection drops, in-flight commands fail with
/// <see cref="RedisConnectionException"/> and a single background loop reconnects with
/// exponential backoff; callers arriving meanwhile wait for it, bounded by the command timeout.
/// Typed commands live in one partial file per family (Keys, Hashes, Streams, SortedSets, Server).
/// </summary>
public sealed partial class RedisClient : IAsyncDisposable
{
    private readonly RedisOptions _options;
    private readonly object _gate = new();
    private readonly CancellationTokenSource _disposed = new();
    private RedisConnection? _connection;
    private Task<RedisConnection>? _connecting;
    private Exception? _lastConnectError;

    public RedisClient(RedisOptions options)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        if (options.MaxPendingCommands < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxPendingCommands must be at least 1");
        if (options.MaxBlockingConnections < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxBlockingConnections must be at least 1");
        _blockingSlots = new SemaphoreSlim(options.MaxBlockingConnections, options.MaxBlockingConnections);
    }

    public RedisOptions Options => _options;

    /// <summary>Creates a client and makes sure the first connection works (fails fast on a wrong address or password).</summary>
    public static async Task<RedisClient> ConnectAsync(RedisOptions options, CancellationToken ct = default)
    {
        var client = new RedisClient(options);
        try
        {
            var conn = await RedisConnection.ConnectAsync(options, ct).ConfigureAwait(false);
            lock (client._gate) client._connection = conn;
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>How many times a connection was (re)established after the first; for tests and metrics.</summary>
    public int Reconnects { get; private set; }

    /// <summary>Sends any command, e.g. <c>ExecuteAsync("SET", "k", "v")</c>, and returns the raw reply.</summary>
    /// <exception cref="RedisServerException">Error reply; the connection stays usable.</exception>
    /// <exception cref="RedisConnectionException">Not connected within the command timeout, or dropped before the reply.</exception>
    /// <exception cref="RedisTimeoutException">No reply within <see cref="RedisOptions.CommandTimeout"/>.</exception>
    public Task<RespValue> ExecuteAsync(params RedisArg[] args) => ExecuteAsync(args, CancellationToken.None);

    /// <inheritdoc cref="ExecuteAsync(RedisArg[])"/>
    public Task<RespValue> ExecuteAsync(RedisArg[] args, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        var conn = Volatile.Read(ref _connection);
        // Fast path: a live connection needs no await before queueing.
        if (conn is { IsAlive: true }) return conn.SendAsync(args, _options.CommandTimeout, ct);
        return ExecuteAfterConnectAsync(args, ct);
    }

    private async Task<RespValue> ExecuteAfterConnectAsync(RedisArg[] args, CancellationToken ct)
    {
        var started = DateTime.UtcNow;
        var conn = await GetConnectionAsync(_options.CommandTimeout, ct).ConfigureAwait(false);
        var left = _options.CommandTimeout - (DateTime.UtcNow - started);
        return await conn.SendAsync(args, left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1), ct).ConfigureAwait(false);
    }

    private async Task<RedisConnection> GetConnectionAsync(TimeSpan wait, CancellationToken ct)
    {
        Task<RedisConnection> connecting;
        lock (_gate)
        {
            if (_connection is { IsAlive: true } live) return live;
            if (_connecting is null || _connecting.IsCompleted)
                _connecting = ReconnectLoopAsync(_connection);
            connecting = _connecting;
        }
        try
        {
            return await connecting.WaitAsync(wait, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_disposed.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new ObjectDisposedException(nameof(RedisClient));
        }
        catch (TimeoutException)
        {
            var last = Volatile.Read(ref _lastConnectError);
            throw new RedisConnectionException(
                $"not connected to {_options} within {wait.TotalMilliseconds:0} ms" + (last is null ? "" : $"; last attempt: {last.Message}"), last);
        }
    }

    /// <summary>
    /// Tries to connect until it succeeds or the client is disposed, sleeping between attempts with
    /// exponential backoff (min delay doubling up to max, with jitter so many clients do not retry in step).
    /// </summary>
    private async Task<RedisConnection> ReconnectLoopAsync(RedisConnection? dead)
    {
        await Task.Yield(); // run outside the caller's lock
        if (dead is not null) await dead.DisposeAsync().ConfigureAwait(false);
        var delay = _options.ReconnectMinDelay;
        while (true)
        {
            _disposed.Token.ThrowIfCancellationRequested();
            try
            {
                var conn = await RedisConnection.ConnectAsync(_options, _disposed.Token).ConfigureAwait(false);
                lock (_gate)
                {
                    _connection = conn;
                    if (dead is not null) Reconnects++;
                }
                if (_disposed.IsCancellationRequested)
                {
                    // DisposeAsync may have run between the connect and the assignment above.
                    await conn.DisposeAsync().ConfigureAwait(false);
                    throw new ObjectDisposedException(nameof(RedisClient));
                }
                Volatile.Write(ref _lastConnectError, null);
                return conn;
            }
            catch (Exception ex) when (ex is RedisException)
            {
                Volatile.Write(ref _lastConnectError, ex);
            }
            var jitter = TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * delay.TotalMilliseconds * 0.2);
            await Task.Delay(delay + jitter, _disposed.Token).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.ReconnectMaxDelay.Ticks));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed.IsCancellationRequested) return;
        _disposed.Cancel();
        RedisConnection? conn;
        lock (_gate) conn = _connection;
        if (conn is not null) await conn.DisposeAsync().ConfigureAwait(false);
        await DisposeBlockingPoolAsync().ConfigureAwait(false);
    }
}
