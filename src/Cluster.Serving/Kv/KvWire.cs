using System.Buffers;
using System.Runtime.InteropServices;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Grpc.Core;
using Google.Protobuf;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// KV blocks on the wire: a <see cref="KvBlockHeader"/> (layer, per-head original positions, byte
/// count) followed by <see cref="KvChunk"/>s of at most 1 MiB (DESIGN.md) holding the block's K then V,
/// head after head, little-endian in the layout's dtype (<see cref="KvPrecision"/>).
/// </summary>
public static class KvWire
{
    /// <summary>Largest KvChunk.data, in bytes (DESIGN.md: blocks travel as chunks of at most 1 MiB).</summary>
    public const int MaxChunkBytes = 1 << 20;

    public static KvBlockHeader Header(KvLayerBlock block, KvPrecision precision) =>
        Header(block.Layer, block.Positions, ((long)block.Keys.Length + block.Values.Length) * precision.Bytes());

    public static KvBlockHeader Header(WireKvBlock block) => Header(block.Layer, block.Positions, block.DataBytes);

    private static KvBlockHeader Header(int layer, int[][] positions, long dataBytes)
    {
        var header = new KvBlockHeader { Layer = layer, DataBytes = dataBytes };
        foreach (var p in positions) header.Heads.Add(new HeadTokens { Positions = { p } });
        return header;
    }

    /// <summary>
    /// The block's data as chunks of at most <see cref="MaxChunkBytes"/>. fp32 chunks wrap the block's
    /// own arrays (no copy until protobuf writes the message to the wire); a 16-bit precision is
    /// converted into one buffer per call, reused chunk after chunk: the caller must have written a
    /// chunk (WriteAsync completed: gRPC has serialized it into its transport buffers) before it asks
    /// for the next.
    /// </summary>
    public static IEnumerable<KvChunk> Chunks(KvLayerBlock block, KvPrecision precision)
    {
        if (precision == KvPrecision.Fp32)
        {
            foreach (var part in new[] { block.Keys, block.Values })
                foreach (var chunk in Wrap(new FloatBytes(part).Memory)) yield return chunk;
            yield break;
        }
        int perChunk = MaxChunkBytes / precision.Bytes();
        var buffer = new byte[Math.Min(MaxChunkBytes, Math.Max(block.Keys.Length, block.Values.Length) * precision.Bytes())];
        foreach (var part in new[] { block.Keys, block.Values })
            for (int offset = 0; offset < part.Length; offset += perChunk)
            {
                int n = Math.Min(perChunk, part.Length - offset);
                var bytes = buffer.AsMemory(0, n * precision.Bytes());
                KvConvert.Encode(part.AsSpan(offset, n), bytes.Span, precision);
                yield return new KvChunk { Data = UnsafeByteOperations.UnsafeWrap(bytes) };
            }
    }

    /// <summary>A stored block's data as chunks wrapping its arrays, as they arrived (no conversion, no copy).</summary>
    public static IEnumerable<KvChunk> Chunks(WireKvBlock block) => Wrap(block.Keys).Concat(Wrap(block.Values));

    private static IEnumerable<KvChunk> Wrap(ReadOnlyMemory<byte> bytes)
    {
        for (int offset = 0; offset < bytes.Length; offset += MaxChunkBytes)
            yield return new KvChunk { Data = UnsafeByteOperations.UnsafeWrap(bytes.Slice(offset, Math.Min(MaxChunkBytes, bytes.Length - offset))) };
    }

    /// <summary>
    /// Reassembles one block from its header and chunks, however the peer cut the chunks: either widened
    /// to fp32 as the bytes arrive (<see cref="Build"/>, a worker's read) or kept as they came
    /// (<see cref="BuildWire"/>, the cache manager's). Throws <see cref="RpcException"/>
    /// (INVALID_ARGUMENT) for a header whose byte count does not match its positions, and for chunks
    /// that overrun it, so a peer's bad data never reaches a cache.
    /// </summary>
    public sealed class BlockAssembler
    {
        private readonly KvBlockHeader _header;
        private readonly KvPrecision _precision;
        // Widening: straight into the new block's fp32 arrays. Raw: into byte arrays.
        private readonly float[]? _keys, _values;
        private readonly byte[]? _keyBytes, _valueBytes;
        private readonly long _length;
        private long _filled;
        // A 16-bit element cut between two chunks: its first byte waits for the next chunk.
        private byte _carry;

        /// <param name="reuse">Widening: arrays of a block the caller is done with, written over when they are
        /// exactly this block's size (every element is, or <see cref="Build"/> throws), else fresh ones are made.</param>
        public BlockAssembler(KvBlockHeader header, int headDim, KvPrecision precision = KvPrecision.Fp32, bool widen = true, KvLayerBlock? reuse = null)
        {
            long tokens = header.Heads.Sum(h => (long)h.Positions.Count);
            long expected = tokens * headDim * precision.Bytes() * 2;
            if (header.DataBytes != expected)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {header.Layer}: data_bytes {header.DataBytes} but {tokens} tokens x head_dim {headDim} x K,V {precision.Name()} need {expected}"));
            if (tokens * headDim * sizeof(float) > int.MaxValue) throw new RpcException(new Status(StatusCode.ResourceExhausted, $"KV block for layer {header.Layer} of {expected} bytes is too large"));
            _header = header;
            _precision = precision;
            _length = expected;
            if (widen && reuse is not null && reuse.Keys.Length == tokens * headDim && reuse.Values.Length == tokens * headDim) (_keys, _values) = (reuse.Keys, reuse.Values);
            else if (widen) (_keys, _values) = (new float[tokens * headDim], new float[tokens * headDim]);
            else (_keyBytes, _valueBytes) = (new byte[expected / 2], new byte[expected / 2]);
        }

        public bool IsComplete => _filled == _length;

        /// <summary>The block's data bytes (header.data_bytes, checked against its positions).</summary>
        public long DataBytes => _length;

        /// <summary>True when <paramref name="bytes"/> more fit in the block (no overrun).</summary>
        public bool Fits(long bytes) => bytes >= 0 && _filled + bytes <= _length;

        public void Add(KvChunk chunk) => Add(chunk.Data.Span);

        /// <summary>The next bytes of the block, segment after segment, straight from a received payload (<see cref="KvWireCodec"/>).</summary>
        public void Add(in ReadOnlySequence<byte> data)
        {
            if (!Fits(data.Length)) ThrowOverrun(); // before anything is written
            foreach (var segment in data) Add(segment.Span);
        }

        public void Add(ReadOnlySpan<byte> data)
        {
            if (!Fits(data.Length)) ThrowOverrun();
            long half = _length / 2;
            while (!data.IsEmpty)
            {
                // A chunk may end the keys and start the values (always at an element boundary).
                bool values = _filled >= half;
                int at = (int)(values ? _filled - half : _filled);
                int n = (int)Math.Min(data.Length, half - at);
                if (_keyBytes is not null) data[..n].CopyTo((values ? _valueBytes! : _keyBytes).AsSpan(at));
                else Widen(values ? _values! : _keys!, at, data[..n]);
                data = data[n..];
                _filled += n;
            }
        }

        /// <summary>Converts <paramref name="data"/>, which starts at byte <paramref name="at"/> of the part, into <paramref name="target"/>.</summary>
        private void Widen(float[] target, int at, ReadOnlySpan<byte> data)
        {
            if (_precision == KvPrecision.Fp32)
            {
                data.CopyTo(MemoryMarshal.AsBytes(target.AsSpan())[at..]);
                return;
            }
            if (at % 2 == 1)
            {
                // Finish the element whose first byte came last time (little-endian).
                target[at / 2] = Widen1((ushort)(_carry | data[0] << 8));
                data = data[1..];
                at++;
            }
            int whole = data.Length / 2;
            KvConvert.Decode(data[..(whole * 2)], target.AsSpan(at / 2, whole), _precision);
            if (data.Length % 2 == 1) _carry = data[^1];
        }

        private void ThrowOverrun() =>
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {_header.Layer}: chunks exceed its data_bytes ({_length})"));

        private float Widen1(ushort bits) => _precision == KvPrecision.Bf16 ? Fp16.FromBf16(bits) : (float)BitConverter.UInt16BitsToHalf(bits);

        /// <summary>The block widened to fp32 (an assembler made with widen: true).</summary>
        public KvLayerBlock Build()
        {
            CheckComplete();
            return new KvLayerBlock(_header.Layer, Positions(), _keys ?? throw new InvalidOperationException("a raw assembler builds wire blocks"), _values!);
        }

        /// <summary>The block as it arrived (an assembler made with widen: false).</summary>
        public WireKvBlock BuildWire()
        {
            CheckComplete();
            return new WireKvBlock(_header.Layer, Positions(), _precision, _keyBytes ?? throw new InvalidOperationException("a widening assembler builds fp32 blocks"), _valueBytes!);
        }

        private void CheckComplete()
        {
            if (!IsComplete) throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {_header.Layer}: {_filled} of {_length} bytes arrived"));
        }

        private int[][] Positions() => _header.Heads.Select(h => h.Positions.ToArray()).ToArray();
    }
}
