using System.Net;
using Cluster.Rpc.Server;
using Microsoft.AspNetCore.Routing;

namespace Cluster.Rpc.Hosting;

public sealed class RpcHostOptions
{
    /// <summary>The HTTP/2-only (h2c) port for gRPC. Port 0 picks a free port.</summary>
    public IPEndPoint GrpcEndPoint { get; set; } = new(IPAddress.Loopback, 0);

    /// <summary>The HTTP/1.1 port for /healthz and /metrics (Prometheus scrapes over HTTP/1.1).</summary>
    public IPEndPoint HttpEndPoint { get; set; } = new(IPAddress.Loopback, 0);

    public RpcServerOptions Server { get; set; } = new();

    /// <summary>
    /// Kestrel's default of 100 concurrent streams per HTTP/2 connection queues calls on a busy
    /// connection (see NOTES.md); gRPC servers usually allow more.
    /// </summary>
    public int MaxStreamsPerConnection { get; set; } = 1000;

    /// <summary>
    /// HTTP/2 receive window per stream, in bytes (Kestrel's default is 768 KiB). KV blocks move
    /// as 1 MiB messages; a window smaller than a message stalls the sender once per message.
    /// </summary>
    public int Http2StreamWindowSize { get; set; } = 768 * 1024;

    /// <summary>HTTP/2 receive window per connection, in bytes (at least the stream window).</summary>
    public int Http2ConnectionWindowSize { get; set; } = 1024 * 1024;

    /// <summary>Answer of /healthz: 200 "ok" when it returns true, 503 otherwise.</summary>
    public Func<bool> IsHealthy { get; set; } = () => true;

    /// <summary>Extra HTTP/1.1 endpoints, e.g. /metrics, mapped by the host that owns them.</summary>
    public Action<IEndpointRouteBuilder>? MapHttpEndpoints { get; set; }

    /// <summary>Minimum log level of the host (Warning keeps tests and benchmarks quiet).</summary>
    public Microsoft.Extensions.Logging.LogLevel MinimumLogLevel { get; set; } = Microsoft.Extensions.Logging.LogLevel.Warning;
}
