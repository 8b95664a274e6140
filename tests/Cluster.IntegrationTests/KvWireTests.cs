using Cluster.Engine.KvCache;
using Cluster.Serving.Kv;
using Google.Protobuf;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>KV blocks on the wire: chunks wrap the block's arrays without copying, and the assembler
/// writes what arrives straight into the new block's arrays, bit for bit, however the peer cut it.</summary>
public sealed class KvWireTests
{
    private static KvLayerBlock Block(int layer, int[] tokensPerHead, int headDim, int seed)
    {
        var rng = new Random(seed);
        int total = tokensPerHead.Sum();
        float[] Data() => Enumerable.Range(0, total * headDim).Select(_ => BitConverter.Int32BitsToSingle(rng.Next())).ToArray(); // any bits, NaN payloads included
        int next = 0;
        var positions = tokensPerHead.Select(n => Enumerable.Range(next, n).Select(p => p * 3).ToArray()).ToArray();
        return new KvLayerBlock(layer, positions, Data(), Data());
    }

    private static void AssertSameBits(float[] expected, float[] actual) =>
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), actual.Select(BitConverter.SingleToInt32Bits));

    [Theory]
    [InlineData(new[] { 3, 3 }, 8)]               // a few hundred bytes: one chunk for K, one for V
    [InlineData(new[] { 40_000, 40_000 }, 8)]     // 2.4 MiB per part: several 1 MiB chunks
    [InlineData(new[] { 5, 0, 7 }, 4)]           // uneven heads, one empty
    public void Chunks_reassemble_bit_for_bit(int[] tokensPerHead, int headDim)
    {
        var block = Block(2, tokensPerHead, headDim, 1);
        var assembler = new KvWire.BlockAssembler(KvWire.Header(block), headDim);
        var chunks = KvWire.Chunks(block).ToList();
        Assert.All(chunks, c => Assert.InRange(c.Data.Length, 1, KvWire.MaxChunkBytes));
        foreach (var c in chunks) assembler.Add(c);
        var got = assembler.Build();
        Assert.Equal(2, got.Layer);
        Assert.Equal(block.Positions, got.Positions);
        AssertSameBits(block.Keys, got.Keys);
        AssertSameBits(block.Values, got.Values);
    }

    [Fact]
    public void Chunks_that_straddle_keys_and_values_land_in_the_right_arrays()
    {
        var block = Block(0, [10, 10], 8, 2);
        var bytes = new byte[block.DataBytes];
        Buffer.BlockCopy(block.Keys, 0, bytes, 0, block.Keys.Length * 4);
        Buffer.BlockCopy(block.Values, 0, bytes, block.Keys.Length * 4, block.Values.Length * 4);
        var assembler = new KvWire.BlockAssembler(KvWire.Header(block), 8);
        for (int offset = 0; offset < bytes.Length; offset += 333) // odd cuts, across floats and across K/V
            assembler.Add(new KvChunk { Data = ByteString.CopyFrom(bytes, offset, Math.Min(333, bytes.Length - offset)) });
        var got = assembler.Build();
        AssertSameBits(block.Keys, got.Keys);
        AssertSameBits(block.Values, got.Values);
    }

    [Fact]
    public void Too_much_or_too_little_data_is_invalid_argument()
    {
        var block = Block(1, [4], 8, 3);
        var over = new KvWire.BlockAssembler(KvWire.Header(block), 8);
        var e = Assert.Throws<RpcException>(() => over.Add(new KvChunk { Data = ByteString.CopyFrom(new byte[block.DataBytes + 1]) }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);

        var under = new KvWire.BlockAssembler(KvWire.Header(block), 8);
        under.Add(new KvChunk { Data = ByteString.CopyFrom(new byte[block.DataBytes - 4]) });
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => under.Build()).StatusCode);

        var header = KvWire.Header(block);
        header.DataBytes += 8;
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => new KvWire.BlockAssembler(header, 8)).StatusCode);
    }

    [Fact]
    public void A_wrapped_chunk_serializes_to_the_same_bytes_as_a_copied_one()
    {
        var block = Block(3, [6, 6], 8, 4);
        var wrapped = KvWire.Chunks(block).First();
        var copied = new KvChunk { Data = ByteString.CopyFrom(wrapped.Data.ToByteArray()) };
        Assert.Equal(copied.ToByteArray(), wrapped.ToByteArray());
        Assert.Equal(copied, KvChunk.Parser.ParseFrom(wrapped.ToByteArray()));
    }
}
