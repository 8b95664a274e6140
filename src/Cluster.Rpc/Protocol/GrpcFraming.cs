using System.Buffers;
using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Pipelines;
using Google.Protobuf;

namespace Cluster.Rpc.Protocol;

/// <summary>
/// Length-prefixed messages, the body of every gRPC request and response (gRPC over HTTP/2 spec,
/// "Length-Prefixed-Message"): 1 byte Compressed-Flag (0 or 1), 4 bytes big-endian length, then
/// the message. Server and client both read and write through these helpers.
/// </summary>
internal static class GrpcFraming
{
    public const int HeaderSize = 5;

    /// <summary>
    /// Takes one whole frame off the front of <paramref name="buffer"/>. Returns false when more
    /// bytes are needed; throws <see cref="RpcException"/> for a bad flag (INTERNAL) or a declared
    /// length over <paramref name="maxMessageSize"/> (RESOURCE_EXHAUSTED, checked before the body
    /// arrives so an oversized message is never buffered).
    /// </summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxMessageSize, out bool compressed, out ReadOnlySequence<byte> payload)
    {
        compressed = false;
        payload = default;
        if (buffer.Length < HeaderSize) return false;

        Span<byte> header = stackalloc byte[HeaderSize];
        buffer.Slice(0, HeaderSize).CopyTo(header);
        if (header[0] > 1) throw new RpcException(StatusCode.Internal, $"Invalid compressed flag {header[0]} in message prefix");
        var length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxMessageSize) throw TooLarge(length, maxMessageSize);
        if (buffer.Length < HeaderSize + length) return false;

        compressed = header[0] == 1;
        payload = buffer.Slice(HeaderSize, length);
        buffer = buffer.Slice(HeaderSize + length);
        return true;
    }

    /// <summary>
    /// Reads the next message, or null at a clean end of stream. A stream that ends inside a
    /// frame is INTERNAL; <paramref name="encoding"/> is the call's grpc-encoding (null = identity).
    /// </summary>
    public static async ValueTask<T?> ReadMessageAsync<T>(PipeReader reader, MessageParser<T> parser, int maxMessageSize, string? encoding, CancellationToken cancellationToken)
        where T : class, IMessage<T>
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            var consumed = buffer.Start;
            var examined = buffer.End;
            try
            {
                if (TryReadFrame(ref buffer, maxMessageSize, out var compressed, out var payload))
                {
                    consumed = examined = buffer.Start;
                    return Parse(parser, payload, compressed, encoding, maxMessageSize);
                }
                if (result.IsCompleted)
                {
                    if (buffer.Length == 0) return null;
                    throw new RpcException(StatusCode.Internal, $"Incomplete message: stream ended inside a frame ({buffer.Length} bytes left)");
                }
                if (result.IsCanceled) throw new OperationCanceledException(cancellationToken);
            }
            finally
            {
                reader.AdvanceTo(consumed, examined);
            }
        }
    }

    /// <summary>Appends one uncompressed frame holding <paramref name="message"/>.</summary>
    public static void WriteMessage(IBufferWriter<byte> writer, IMessage message)
    {
        var size = message.CalculateSize();
        var header = writer.GetSpan(HeaderSize);
        header[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(header[1..], (uint)size);
        writer.Advance(HeaderSize);
        message.WriteTo(writer);
    }

    private static T Parse<T>(MessageParser<T> parser, ReadOnlySequence<byte> payload, bool compressed, string? encoding, int maxMessageSize)
        where T : class, IMessage<T>
    {
        if (compressed)
        {
            // Spec: a set Compressed-Flag with no (or identity) grpc-encoding is a protocol error.
            if (encoding is null || encoding == GrpcProtocol.Identity)
                throw new RpcException(StatusCode.Internal, "Compressed flag set but no grpc-encoding was declared");
            payload = new ReadOnlySequence<byte>(Gunzip(payload, maxMessageSize));
        }
        try
        {
            return parser.ParseFrom(payload);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new RpcException(StatusCode.Internal, "Failed to deserialize message", inner: ex);
        }
    }

    /// <summary>Decompresses with the size limit applied to the decompressed bytes too (a zip bomb is RESOURCE_EXHAUSTED).</summary>
    private static byte[] Gunzip(ReadOnlySequence<byte> payload, int maxMessageSize)
    {
        try
        {
            using var gzip = new GZipStream(new MemoryStream(payload.ToArray()), CompressionMode.Decompress);
            using var output = new MemoryStream();
            var chunk = new byte[81920];
            int n;
            while ((n = gzip.Read(chunk)) > 0)
            {
                if (output.Length + n > maxMessageSize) throw TooLarge((ulong)(output.Length + n), maxMessageSize);
                output.Write(chunk, 0, n);
            }
            return output.ToArray();
        }
        catch (InvalidDataException ex)
        {
            throw new RpcException(StatusCode.Internal, "Failed to decompress gzip message", inner: ex);
        }
    }

    private static RpcException TooLarge(ulong length, int max) =>
        new(StatusCode.ResourceExhausted, $"Received message larger than max ({length} vs. {max})");
}
