using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// A faster codec for the two KV streaming methods, CacheManager.PutBlocks and GetBlocks (issue 17: a
/// block's bytes are written once into the message buffer and read straight into the destination). The
/// wire format is unchanged: every message is the same protobuf bytes Google.Protobuf writes and reads,
/// so generated clients and servers in any language talk to it as before.
/// <para>
/// Reading a chunk item (<c>PutBlocksRequest.chunk</c> / <c>GetBlocksResponse.chunk</c>, both field 3
/// holding a <see cref="KvChunk"/> whose field 1 is the data) while a <see cref="KvChunkSink"/> is
/// active in the reading flow and has a block under way: the data bytes are copied from gRPC's received
/// payload (a <see cref="ReadOnlySequence{T}"/>, not made contiguous) straight into that block's arrays,
/// and the reader gets <see cref="IsDelivered(KvChunk)"/> instead of a message holding a copy. The
/// generated path copied each chunk twice (protobuf into a new byte[] per chunk, large-object heap at
/// 85 KB and up, then the assembler into the block). Everything else (headers, block headers, chunks
/// with no sink, a chunk that would overrun its block, any message of another shape) goes through
/// Google.Protobuf's parser as before, so error handling is the same.
/// </para>
/// <para>
/// Writing a chunk item: tag, lengths and data straight into gRPC's buffer writer (one copy of the
/// data, as Google.Protobuf's own writer does, without its per-message size pass). Other items: Google.Protobuf.
/// </para>
/// </summary>
public static class KvWireCodec
{
    /// <summary>Field 3 (the oneof's chunk), wire type 2 (length-delimited): the same in PutBlocksRequest and GetBlocksResponse.</summary>
    internal const byte ChunkItemTag = (3 << 3) | 2;

    /// <summary>KvChunk.data: field 1, wire type 2.</summary>
    internal const byte DataTag = (1 << 3) | 2;

    private static readonly string ServiceName = LlmCluster.V1.CacheManager.Descriptor.FullName;

    // What a reader gets for a chunk whose bytes went straight into its block: shared, never to be changed.
    private static readonly KvChunk Delivered = new();
    private static readonly PutBlocksRequest DeliveredPut = new() { Chunk = Delivered };
    private static readonly GetBlocksResponse DeliveredGet = new() { Chunk = Delivered };

    private static readonly AsyncLocal<KvChunkSink?> CurrentSink = new();
    private static long _directChunks;

    /// <summary>Chunks read straight into their block so far in this process (tests and the bench check the fast path is taken).</summary>
    public static long DirectChunks => Interlocked.Read(ref _directChunks);

    public static readonly Marshaller<PutBlocksRequest> PutBlocksRequestMarshaller =
        ChunkItemMarshaller(PutBlocksRequest.Parser, r => r.ItemCase == PutBlocksRequest.ItemOneofCase.Chunk ? r.Chunk : null, DeliveredPut);

    public static readonly Marshaller<GetBlocksResponse> GetBlocksResponseMarshaller =
        ChunkItemMarshaller(GetBlocksResponse.Parser, r => r.ItemCase == GetBlocksResponse.ItemOneofCase.Chunk ? r.Chunk : null, DeliveredGet);

    /// <summary>CacheManager.PutBlocks with this codec for its request stream (the response: Google.Protobuf).</summary>
    public static readonly Method<PutBlocksRequest, PutBlocksResponse> PutBlocks = new(MethodType.ClientStreaming, ServiceName, "PutBlocks",
        PutBlocksRequestMarshaller, ProtobufMarshaller(PutBlocksResponse.Parser));

    /// <summary>CacheManager.GetBlocks with this codec for its response stream (the request: Google.Protobuf).</summary>
    public static readonly Method<GetBlocksRequest, GetBlocksResponse> GetBlocks = new(MethodType.ServerStreaming, ServiceName, "GetBlocks",
        ProtobufMarshaller(GetBlocksRequest.Parser), GetBlocksResponseMarshaller);

    /// <summary>
    /// Makes <paramref name="sink"/> the destination of chunks read in the current async flow (the code
    /// that enumerates a PutBlocks request stream or a GetBlocks response stream), until
    /// <see cref="EndReceive"/> or the calling async method returns. gRPC deserializes a streamed message
    /// inside the reader's MoveNext, in the reader's flow, one message at a time, so the sink's block
    /// is the one whose header the reader saw last.
    /// </summary>
    public static void BeginReceive(KvChunkSink sink) => CurrentSink.Value = sink;

    /// <summary>Ends <see cref="BeginReceive"/> (so that work started later in this flow holds no block).</summary>
    public static void EndReceive()
    {
        if (CurrentSink.Value is { } sink) sink.Block = null;
        CurrentSink.Value = null;
    }

    /// <summary>True when the chunk's bytes were already written into the sink's block (the reader adds nothing).</summary>
    public static bool IsDelivered(KvChunk chunk) => ReferenceEquals(chunk, Delivered);

    /// <summary>
    /// A service binder that passes the generated CacheManager binding through, with
    /// <see cref="PutBlocks"/> and <see cref="GetBlocks"/> in place of the generated methods of those names
    /// (the handlers unchanged). Every other method, including ones added to the proto later, binds as generated.
    /// </summary>
    public sealed class CacheManagerBinder(ServiceBinderBase inner) : ServiceBinderBase
    {
        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse>? handler) =>
            inner.AddMethod(method, handler);

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse>? handler) =>
            inner.AddMethod(method.FullName == PutBlocks.FullName ? (Method<TRequest, TResponse>)(object)PutBlocks : method, handler);

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse>? handler) =>
            inner.AddMethod(method.FullName == GetBlocks.FullName ? (Method<TRequest, TResponse>)(object)GetBlocks : method, handler);

        public override void AddMethod<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse>? handler) =>
            inner.AddMethod(method, handler);
    }

    /// <summary>A plain Google.Protobuf marshaller (what Grpc.Tools generates).</summary>
    public static Marshaller<T> ProtobufMarshaller<T>(MessageParser<T> parser) where T : IMessage<T>, IBufferMessage =>
        Marshallers.Create<T>(WriteProtobuf, context => parser.ParseFrom(context.PayloadAsReadOnlySequence()));

    private static void WriteProtobuf<T>(T message, SerializationContext context) where T : IMessage<T>, IBufferMessage
    {
        context.SetPayloadLength(message.CalculateSize());
        message.WriteTo(context.GetBufferWriter());
        context.Complete();
    }

    private static Marshaller<T> ChunkItemMarshaller<T>(MessageParser<T> parser, Func<T, KvChunk?> chunkOf, T delivered) where T : IMessage<T>, IBufferMessage =>
        Marshallers.Create<T>(
            (message, context) =>
            {
                if (chunkOf(message) is { } chunk && !IsDelivered(chunk)) WriteChunkItem(chunk.Data.Span, context);
                else WriteProtobuf(message, context);
            },
            context =>
            {
                var payload = context.PayloadAsReadOnlySequence();
                if (CurrentSink.Value is { Block: { } block } && TryFindChunkData(payload, out long offset, out int length) && block.Fits(length))
                {
                    block.Add(payload.Slice(offset, length));
                    Interlocked.Increment(ref _directChunks);
                    return delivered;
                }
                return parser.ParseFrom(payload);
            });

    /// <summary>Protobuf bytes of a chunk item: 0x1A, len(inner), 0x0A, len(data), data (what Google.Protobuf writes for it).</summary>
    internal static int ChunkItemSize(int dataLength)
    {
        int inner = dataLength == 0 ? 0 : 1 + CodedOutputStream.ComputeLengthSize(dataLength) + dataLength;
        return 1 + CodedOutputStream.ComputeLengthSize(inner) + inner;
    }

    /// <summary>Writes a chunk item with <paramref name="data"/>: the framing, then the data copied once into the writer's buffers.</summary>
    internal static void WriteChunkItem(ReadOnlySpan<byte> data, SerializationContext context)
    {
        context.SetPayloadLength(ChunkItemSize(data.Length));
        WriteChunkItem(data, context.GetBufferWriter());
        context.Complete();
    }

    internal static void WriteChunkItem(ReadOnlySpan<byte> data, IBufferWriter<byte> writer)
    {
        // proto3: an empty `bytes` field is not written, so an empty chunk is the item with an empty KvChunk.
        int inner = data.IsEmpty ? 0 : 1 + CodedOutputStream.ComputeLengthSize(data.Length) + data.Length;
        int headerLength = 1 + CodedOutputStream.ComputeLengthSize(inner) + (data.IsEmpty ? 0 : 1 + CodedOutputStream.ComputeLengthSize(data.Length));
        var header = writer.GetSpan(headerLength);
        int n = 0;
        header[n++] = ChunkItemTag;
        n += WriteVarint(header[n..], (uint)inner);
        if (!data.IsEmpty)
        {
            header[n++] = DataTag;
            n += WriteVarint(header[n..], (uint)data.Length);
        }
        writer.Advance(n);
        while (!data.IsEmpty)
        {
            var span = writer.GetSpan(Math.Min(data.Length, 1 << 16));
            int k = Math.Min(span.Length, data.Length);
            data[..k].CopyTo(span);
            writer.Advance(k);
            data = data[k..];
        }
    }

    private static int WriteVarint(Span<byte> span, uint value)
    {
        int n = 0;
        while (value >= 0x80)
        {
            span[n++] = (byte)(value | 0x80);
            value >>= 7;
        }
        span[n++] = (byte)value;
        return n;
    }

    /// <summary>
    /// True when <paramref name="payload"/> is exactly one chunk item with non-empty data and nothing
    /// else (0x1A, varint L1 = rest, 0x0A, varint L2 = rest, L2 bytes); <paramref name="offset"/> and
    /// <paramref name="length"/> locate the data. Any other shape (unknown fields, repeated fields,
    /// an empty chunk, a truncated or oversized length) is false: the caller leaves it to Google.Protobuf.
    /// </summary>
    internal static bool TryFindChunkData(ReadOnlySequence<byte> payload, out long offset, out int length)
    {
        offset = 0;
        length = 0;
        var reader = new SequenceReader<byte>(payload);
        if (!reader.TryRead(out byte tag) || tag != ChunkItemTag) return false;
        if (!TryReadVarint(ref reader, out uint inner) || inner != reader.Remaining) return false;
        if (!reader.TryRead(out tag) || tag != DataTag) return false;
        if (!TryReadVarint(ref reader, out uint data) || data == 0 || data != reader.Remaining) return false;
        offset = reader.Consumed;
        length = (int)data;
        return true;
    }

    /// <summary>A varint of at most 5 bytes whose value fits an int (longer or larger ones: false, for Google.Protobuf to judge).</summary>
    private static bool TryReadVarint(ref SequenceReader<byte> reader, out uint value)
    {
        value = 0;
        for (int shift = 0; shift < 35; shift += 7)
        {
            if (!reader.TryRead(out byte b)) return false;
            if (shift == 28 && b > 0x07) return false; // past int.MaxValue (or a 6th byte)
            value |= (uint)(b & 0x7F) << shift;
            if (b < 0x80) return true;
        }
        return false;
    }
}

/// <summary>
/// Where the KV chunks read in one flow go (<see cref="KvWireCodec.BeginReceive"/>): the reader sets
/// <see cref="Block"/> to the assembler of each block header it reads, and the codec writes that block's
/// chunks into it as they are deserialized.
/// </summary>
public sealed class KvChunkSink
{
    public KvWire.BlockAssembler? Block { get; set; }
}
