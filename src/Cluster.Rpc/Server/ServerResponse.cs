using System.Globalization;
using Cluster.Rpc.Protocol;
using Google.Protobuf;
using Microsoft.AspNetCore.Http;

namespace Cluster.Rpc.Server;

/// <summary>Writes the server side of the wire: headers, messages and the status.</summary>
internal static class ServerResponse
{
    /// <summary>
    /// Ends the call with <paramref name="code"/>. Before any message was sent this is a
    /// "Trailers-Only" response (status in the single HEADERS frame, which Kestrel sends with
    /// END_STREAM when there is no body); afterwards the status goes in the trailing HEADERS.
    /// </summary>
    public static void WriteStatus(HttpResponse response, StatusCode code, string? message, Metadata? headers, Metadata? trailers)
    {
        if (!response.HasStarted)
        {
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = GrpcProtocol.ContentType;
            AddMetadata(response.Headers, headers);
            response.Headers[GrpcProtocol.StatusHeader] = ((int)code).ToString(CultureInfo.InvariantCulture);
            if (!string.IsNullOrEmpty(message)) response.Headers[GrpcProtocol.MessageHeader] = PercentEncoding.Encode(message);
            AddMetadata(response.Headers, trailers);
            return;
        }
        response.AppendTrailer(GrpcProtocol.StatusHeader, ((int)code).ToString(CultureInfo.InvariantCulture));
        if (!string.IsNullOrEmpty(message)) response.AppendTrailer(GrpcProtocol.MessageHeader, PercentEncoding.Encode(message));
        if (trailers is null) return;
        foreach (var e in trailers)
            if (!GrpcProtocol.IsReservedHeader(e.Key)) response.AppendTrailer(e.Key, Metadata.WireValue(e));
    }

    /// <summary>Frames and flushes one message, sending the response headers first if not yet sent.</summary>
    public static async Task WriteMessageAsync(HttpResponse response, Metadata headers, IMessage message, CancellationToken cancellationToken)
    {
        if (!response.HasStarted) AddMetadata(response.Headers, headers);
        GrpcFraming.WriteMessage(response.BodyWriter, message);
        var flush = await response.BodyWriter.FlushAsync(cancellationToken).ConfigureAwait(false);
        if (flush.IsCanceled) throw new OperationCanceledException(cancellationToken);
    }

    private static void AddMetadata(IHeaderDictionary target, Metadata? metadata)
    {
        if (metadata is null) return;
        foreach (var e in metadata)
            if (!GrpcProtocol.IsReservedHeader(e.Key)) target.Append(e.Key, Metadata.WireValue(e));
    }
}
