using System.Net;
using System.Net.Sockets;

namespace Cluster.Redis.Tests;

/// <summary>
/// A scripted TCP peer for failure tests: each accepted connection is handed to <c>handler</c>,
/// which reads the client's bytes and writes whatever it likes (partial replies, garbage, nothing).
/// </summary>
public sealed class FakeRedisServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accept;
    private int _connections;

    public FakeRedisServer(Func<int, NetworkStream, CancellationToken, Task> handler)
    {
        _listener.Start();
        _accept = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient client;
                try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
                catch (Exception) { return; }
                int n = Interlocked.Increment(ref _connections);
                _ = Task.Run(async () =>
                {
                    using (client)
                    {
                        try { await handler(n, client.GetStream(), _stop.Token); }
                        catch (Exception) { /* the client went away */ }
                    }
                });
            }
        });
    }

    public int Connections => Volatile.Read(ref _connections);
    public RedisOptions Options => new()
    {
        Host = "127.0.0.1", Port = ((IPEndPoint)_listener.LocalEndpoint).Port,
        CommandTimeout = TimeSpan.FromSeconds(20), ConnectTimeout = TimeSpan.FromSeconds(10),
    };

    /// <summary>Reads until <paramref name="count"/> complete commands (RESP arrays) arrived; returns false on EOF.</summary>
    public static async Task<bool> ReadCommandsAsync(NetworkStream s, int count, CancellationToken ct)
    {
        var buf = new List<byte>();
        var chunk = new byte[4096];
        while (true)
        {
            int seen = 0, pos = 0;
            var arr = buf.ToArray();
            while (seen < count && RespParser.TryParse(arr.AsSpan(pos), RespLimits.Default, out _, out int used)) { pos += used; seen++; }
            if (seen >= count) return true;
            int n = await s.ReadAsync(chunk, ct);
            if (n == 0) return false;
            buf.AddRange(chunk.AsSpan(0, n).ToArray());
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _accept;
    }
}
