using System.Runtime.InteropServices;
using Cluster.Engine.KvCache;
using Grpc.Core;
using Google.Protobuf;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// KV blocks on the wire: a <see cref="KvBlockHeader"/> (layer, per-head original positions, byte
/// count) followed by <see cref="KvChunk"/>s of at most 1 MiB (DESIGN.md) holding the block's K then V
/// as little-endian fp32, head after head.
/// </summary>
public static class KvWire
{
    /// <summary>Largest KvChunk.data, in bytes (DESIGN.md: blocks travel as chunks of at most 1 MiB).</summary>
    public const int MaxChunkBytes = 1 << 20;

    public static KvBlockHeader Header(KvLayerBlock block)
    {
        var header = new KvBlockHeader { Layer = block.Layer, DataBytes = block.DataBytes };
        foreach (var p in block.Positions) header.Heads.Add(new HeadTokens { Positions = { p } });
        return header;
    }

    /// <summary>The block's data cut into chunks of at most <see cref="MaxChunkBytes"/>, each wrapping the
    /// block's own arrays (no copy until protobuf writes the message to the wire).</summary>
    public static IEnumerable<KvChunk> Chunks(KvLayerBlock block)
    {
        foreach (var part in new[] { block.Keys, block.Values })
        {
            var bytes = new FloatBytes(part).Memory;
            for (int offset = 0; offset < bytes.Length; offset += MaxChunkBytes)
                yield return new KvChunk { Data = UnsafeByteOperations.UnsafeWrap(bytes.Slice(offset, Math.Min(MaxChunkBytes, bytes.Length - offset))) };
        }
    }

    /// <summary>
    /// Reassembles one block from its header and chunks. Throws <see cref="RpcException"/>
    /// (INVALID_ARGUMENT) for a header whose byte count does not match its positions, and for chunks
    /// that overrun it, so a peer's bad data never reaches a cache.
    /// </summary>
    public sealed class BlockAssembler
    {
        private readonly KvBlockHeader _header;
        // The chunks are copied straight into the block's own arrays, K then V.
        private readonly float[] _keys, _values;
        private readonly long _length;
        private long _filled;

        public BlockAssembler(KvBlockHeader header, int headDim)
        {
            long tokens = header.Heads.Sum(h => (long)h.Positions.Count);
            long expected = tokens * headDim * sizeof(float) * 2;
            if (header.DataBytes != expected)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {header.Layer}: data_bytes {header.DataBytes} but {tokens} tokens x head_dim {headDim} x K,V fp32 need {expected}"));
            if (expected > int.MaxValue) throw new RpcException(new Status(StatusCode.ResourceExhausted, $"KV block for layer {header.Layer} of {expected} bytes is too large"));
            _header = header;
            _length = expected;
            _keys = new float[tokens * headDim];
            _values = new float[tokens * headDim];
        }

        public bool IsComplete => _filled == _length;

        public void Add(KvChunk chunk)
        {
            var data = chunk.Data.Span;
            if (_filled + data.Length > _length)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {_header.Layer}: chunks exceed its data_bytes ({_length})"));
            long half = _length / 2;
            while (!data.IsEmpty)
            {
                // A chunk may end the keys and start the values.
                var (target, at) = _filled < half ? (_keys, _filled) : (_values, _filled - half);
                var into = MemoryMarshal.AsBytes(target.AsSpan())[(int)at..];
                int n = Math.Min(data.Length, into.Length);
                data[..n].CopyTo(into);
                data = data[n..];
                _filled += n;
            }
        }

        public KvLayerBlock Build()
        {
            if (!IsComplete) throw new RpcException(new Status(StatusCode.InvalidArgument, $"KV block for layer {_header.Layer}: {_filled} of {_length} bytes arrived"));
            return new KvLayerBlock(_header.Layer, _header.Heads.Select(h => h.Positions.ToArray()).ToArray(), _keys, _values);
        }
    }
}
