using System.Net;
using Grpc.Net.Client;

namespace Cluster.Serving.Routing;

/// <summary>
/// The one way this system opens a gRPC channel, with the client settings long streams and many
/// concurrent calls need (NOTES.md): several HTTP/2 connections, keepalive pings only while calls are
/// active and no more often than every 60 s (grpc-core servers answer faster pings with GOAWAY
/// too_many_pings), no overall timeout (deadlines are per call), connections kept while idle, and
/// reconnect attempts at most a second apart.
/// </summary>
public static class GrpcChannels
{
    /// <summary>Largest message accepted either way: KV chunks are at most 1 MiB, so 16 MiB is headroom.</summary>
    public const int MaxMessageBytes = 16 * 1024 * 1024;

    /// <summary>
    /// Longest wait between two connection attempts to an address that refused. A channel whose
    /// connection failed fails calls at once (UNAVAILABLE) until its next attempt, and the library's
    /// default backoff grows to 120 s: a worker that came up (or was restarted by its supervisor) a
    /// moment after the gateway first tried it stayed unreachable for that long. Inside a cluster an
    /// attempt is cheap, so one a second at most.
    /// </summary>
    public static readonly TimeSpan MaxReconnectBackoff = TimeSpan.FromSeconds(1);

    public static GrpcChannel Create(Uri address, TimeSpan? connectTimeout = null) =>
        GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler
            {
                // One HTTP/2 connection caps concurrent calls at the server's stream limit; open more
                // when streams pile up (NOTES.md: 500 calls, 1130 ms on one connection, 256 ms on five).
                EnableMultipleHttp2Connections = true,
                KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
                KeepAlivePingDelay = TimeSpan.FromSeconds(60),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(20),
                ConnectTimeout = connectTimeout ?? TimeSpan.FromSeconds(10),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
                AutomaticDecompression = DecompressionMethods.None,
                UseCookies = false,
                UseProxy = false,
            },
            DisposeHttpClient = true,
            MaxReceiveMessageSize = MaxMessageBytes,
            MaxSendMessageSize = MaxMessageBytes,
            InitialReconnectBackoff = TimeSpan.FromMilliseconds(200),
            MaxReconnectBackoff = MaxReconnectBackoff,
        });

    /// <summary>A channel for "host:port" or "http(s)://host:port".</summary>
    public static GrpcChannel Create(string address) => Create(ParseAddress(address));

    /// <summary>"host:port" (http assumed) or an http(s) URL, reduced to scheme, host and port.
    /// Throws <see cref="ArgumentException"/> naming the address otherwise.</summary>
    public static Uri ParseAddress(string address)
    {
        var a = address.Trim();
        if (!a.Contains("://", StringComparison.Ordinal)) a = "http://" + a;
        return Uri.TryCreate(a, UriKind.Absolute, out var u) && u.Scheme is "http" or "https" && u.Host.Length > 0
            ? new Uri(u.GetLeftPart(UriPartial.Authority))
            : throw new ArgumentException($"'{address}' is not a host:port or http://host:port address");
    }
}
