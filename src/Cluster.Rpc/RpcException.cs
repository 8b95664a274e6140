namespace Cluster.Rpc;

/// <summary>
/// A call that ended with a non-OK gRPC status. Servers throw it to choose the status a client
/// sees; clients receive it when the status in the trailers (or trailers-only headers) is not OK.
/// </summary>
public sealed class RpcException : Exception
{
    public RpcException(StatusCode statusCode, string detail, Metadata? trailers = null, Exception? inner = null)
        : base($"Status(StatusCode=\"{statusCode}\", Detail=\"{detail}\")", inner)
    {
        StatusCode = statusCode;
        Detail = detail;
        Trailers = trailers ?? new Metadata();
    }

    public StatusCode StatusCode { get; }

    /// <summary>The human-readable status message (grpc-message), already percent-decoded.</summary>
    public string Detail { get; }

    /// <summary>Custom metadata sent with the status (trailers).</summary>
    public Metadata Trailers { get; }
}
