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
        var assembler = new KvWire.BlockAssembler(KvWire.Header(block, KvPrecision.Fp32), headDim);
        var chunks = KvWire.Chunks(block, KvPrecision.Fp32).ToList();
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
        var assembler = new KvWire.BlockAssembler(KvWire.Header(block, KvPrecision.Fp32), 8);
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
        var over = new KvWire.BlockAssembler(KvWire.Header(block, KvPrecision.Fp32), 8);
        var e = Assert.Throws<RpcException>(() => over.Add(new KvChunk { Data = ByteString.CopyFrom(new byte[block.DataBytes + 1]) }));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);

        var under = new KvWire.BlockAssembler(KvWire.Header(block, KvPrecision.Fp32), 8);
        under.Add(new KvChunk { Data = ByteString.CopyFrom(new byte[block.DataBytes - 4]) });
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => under.Build()).StatusCode);

        var header = KvWire.Header(block, KvPrecision.Fp32);
        header.DataBytes += 8;
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => new KvWire.BlockAssembler(header, 8)).StatusCode);
    }

    [Fact]
    public void A_wrapped_chunk_serializes_to_the_same_bytes_as_a_copied_one()
    {
        var block = Block(3, [6, 6], 8, 4);
        var wrapped = KvWire.Chunks(block, KvPrecision.Fp32).First();
        var copied = new KvChunk { Data = ByteString.CopyFrom(wrapped.Data.ToByteArray()) };
        Assert.Equal(copied.ToByteArray(), wrapped.ToByteArray());
        Assert.Equal(copied, KvChunk.Parser.ParseFrom(wrapped.ToByteArray()));
    }

    [Theory]
    [InlineData("bf16", new[] { 3, 3 }, 8)]
    [InlineData("fp16", new[] { 3, 3 }, 8)]
    [InlineData("bf16", new[] { 70_000, 70_000 }, 8)]   // 2.1 MiB per part in 16 bits: several chunks
    [InlineData("fp16", new[] { 5, 0, 7 }, 4)]
    public void Sixteen_bit_chunks_carry_half_the_bytes_and_widen_to_the_rounded_values(string dtype, int[] tokensPerHead, int headDim)
    {
        var p = KvPrecisions.Parse(dtype);
        var block = Ranged(Block(1, tokensPerHead, headDim, 5));
        var header = KvWire.Header(block, p);
        Assert.Equal(block.DataBytes / 2, header.DataBytes);
        var chunks = KvWire.Chunks(block, p).Select(c => new KvChunk { Data = ByteString.CopyFrom(c.Data.Span) }).ToList(); // the buffer is reused chunk after chunk
        Assert.All(chunks, c => Assert.InRange(c.Data.Length, 1, KvWire.MaxChunkBytes));
        Assert.Equal(block.DataBytes / 2, chunks.Sum(c => (long)c.Data.Length));

        var widened = new KvWire.BlockAssembler(header, headDim, p);
        var raw = new KvWire.BlockAssembler(header, headDim, p, widen: false);
        foreach (var c in chunks) { widened.Add(c); raw.Add(c); }
        var got = widened.Build();
        Assert.Equal(block.Keys.Select(x => Reference(x, p)), got.Keys);
        Assert.Equal(block.Values.Select(x => Reference(x, p)), got.Values);
        // The cache manager's form: the same bytes, and they widen to the same values.
        var stored = raw.BuildWire();
        Assert.Equal(p, stored.Precision);
        Assert.Equal(block.DataBytes / 2, stored.DataBytes);
        Assert.Equal(got.Keys, stored.ToFloats().Keys);
        Assert.Equal(got.Values, stored.ToFloats().Values);
        Assert.Equal(block.Positions, stored.Positions);
    }

    [Theory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void Sixteen_bit_data_cut_mid_element_lands_whole(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        var block = Ranged(Block(0, [10, 10], 8, 6));
        var bytes = KvWire.Chunks(block, p).SelectMany(c => c.Data.ToByteArray()).ToArray();
        var assembler = new KvWire.BlockAssembler(KvWire.Header(block, p), 8, p);
        for (int offset = 0; offset < bytes.Length; offset += 333) // odd cuts: across elements and across K/V
            assembler.Add(new KvChunk { Data = ByteString.CopyFrom(bytes, offset, Math.Min(333, bytes.Length - offset)) });
        var got = assembler.Build();
        Assert.Equal(block.Keys.Select(x => Reference(x, p)), got.Keys);
        Assert.Equal(block.Values.Select(x => Reference(x, p)), got.Values);
    }

    /// <summary>The block with values in KV's usual range (no NaN, nothing past fp16's range), so every element has one right answer.</summary>
    private static KvLayerBlock Ranged(KvLayerBlock b)
    {
        var rng = new Random(b.Layer + 100);
        float[] Data(int n) => Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-20, 12)))).ToArray();
        return b with { Keys = Data(b.Keys.Length), Values = Data(b.Values.Length) };
    }

    /// <summary>x rounded to the nearest value of the 16-bit format, ties to the even mantissa, found by comparing
    /// the two neighbours' values (not by the bit trick the code uses). fp16 through .NET's own Half cast.</summary>
    internal static float Reference(float x, KvPrecision p)
    {
        if (p == KvPrecision.Fp32) return x;
        if (p == KvPrecision.Fp16) return (float)(Half)x;
        uint u = BitConverter.SingleToUInt32Bits(x);
        uint lo = u & 0xffff0000, hi = lo + 0x10000;
        double dlo = Math.Abs((double)x - BitConverter.UInt32BitsToSingle(lo)), dhi = Math.Abs((double)BitConverter.UInt32BitsToSingle(hi) - x);
        uint pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1) == 0 ? lo : hi;
        return BitConverter.UInt32BitsToSingle(pick);
    }
}
