namespace Cluster.Rpc.Protocol;

/// <summary>Names and values fixed by the "gRPC over HTTP/2" spec (doc/PROTOCOL-HTTP2.md).</summary>
internal static class GrpcProtocol
{
    public const string ContentType = "application/grpc";
    public const string StatusHeader = "grpc-status";
    public const string MessageHeader = "grpc-message";
    public const string TimeoutHeader = "grpc-timeout";
    public const string EncodingHeader = "grpc-encoding";
    public const string AcceptEncodingHeader = "grpc-accept-encoding";
    public const string TeHeader = "te";
    public const string Identity = "identity";
    public const string Gzip = "gzip";

    /// <summary>What we can decompress; sent with UNIMPLEMENTED for any other grpc-encoding.</summary>
    public const string SupportedEncodings = "identity,gzip";

    /// <summary>
    /// "application/grpc" optionally followed by "+proto", "+json" ... or parameters. Anything else
    /// (including "application/grpc-web") is not this protocol.
    /// </summary>
    public static bool IsGrpcContentType(string? contentType)
    {
        if (contentType is null || !contentType.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase)) return false;
        if (contentType.Length == ContentType.Length) return true;
        var next = contentType[ContentType.Length];
        return next is '+' or ';';
    }

    /// <summary>
    /// Headers that are part of the protocol rather than custom metadata, so they are neither
    /// exposed as request metadata nor accepted from user metadata ("grpc-" is reserved).
    /// </summary>
    public static bool IsReservedHeader(string key) =>
        key.StartsWith(':') || key.StartsWith("grpc-", StringComparison.OrdinalIgnoreCase)
        || key.Equals("content-type", StringComparison.OrdinalIgnoreCase)
        || key.Equals("te", StringComparison.OrdinalIgnoreCase)
        || key.Equals("host", StringComparison.OrdinalIgnoreCase)
        || key.Equals("content-length", StringComparison.OrdinalIgnoreCase)
        || key.Equals("connection", StringComparison.OrdinalIgnoreCase)
        || key.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase);
}
