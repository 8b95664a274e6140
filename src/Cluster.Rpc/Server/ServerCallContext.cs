using Microsoft.AspNetCore.Http;

namespace Cluster.Rpc.Server;

/// <summary>What a handler knows about its call and can send besides messages.</summary>
public sealed class ServerCallContext
{
    internal ServerCallContext(HttpContext httpContext, string method, DateTime? deadline, Metadata requestHeaders, CancellationToken cancellationToken)
    {
        HttpContext = httpContext;
        Method = method;
        Deadline = deadline;
        RequestHeaders = requestHeaders;
        CancellationToken = cancellationToken;
    }

    /// <summary>Full method path, "/package.Service/Method".</summary>
    public string Method { get; }

    /// <summary>UTC deadline from grpc-timeout, or null for none.</summary>
    public DateTime? Deadline { get; }

    /// <summary>Custom metadata the client sent.</summary>
    public Metadata RequestHeaders { get; }

    /// <summary>Headers sent before the first response message (or with a trailers-only status).</summary>
    public Metadata ResponseHeaders { get; } = new();

    /// <summary>Trailers sent with the status, when the handler returns normally.</summary>
    public Metadata ResponseTrailers { get; } = new();

    /// <summary>Fires when the client goes away (RST_STREAM, connection loss) or the deadline passes.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>"ipv4:127.0.0.1:5000" style peer address.</summary>
    public string Peer => $"{(HttpContext.Connection.RemoteIpAddress?.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "ipv6" : "ipv4")}:{HttpContext.Connection.RemoteIpAddress}:{HttpContext.Connection.RemotePort}";

    /// <summary>The underlying request, for hosts that need more than the above.</summary>
    public HttpContext HttpContext { get; }
}
