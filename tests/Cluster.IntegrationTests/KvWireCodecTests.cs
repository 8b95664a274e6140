using System.Buffers;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Google.Protobuf;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// <see cref="KvWireCodec"/> against Google.Protobuf's own serializer and parser: the same bytes out for
/// every message, the same message in (or the chunk's exact bytes in its block) for every payload however
/// gRPC's buffers cut it, chunk sizes at every varint edge, malformed payloads treated as the parser
/// treats them; and generated (plain protobuf) clients against the cache manager that uses it.
/// </summary>
public sealed class KvWireCodecTests
{
    // Data lengths around every varint edge of the data length and of the item's inner length
    // (126 data bytes make an inner length of exactly 128), up to past 1 MiB (KvWire.MaxChunkBytes).
    public static TheoryData<int> EdgeSizes()
    {
        var sizes = new SortedSet<int> { 1, 2, 3, 7, 8, KvWire.MaxChunkBytes - 1, KvWire.MaxChunkBytes, KvWire.MaxChunkBytes + 1 };
        foreach (int p in new[] { 7, 14, 21 })
            for (int d = (1 << p) - 6; d <= (1 << p) + 2; d++) sizes.Add(d);
        var data = new TheoryData<int>();
        foreach (var s in sizes) data.Add(s);
        return data;
    }

    private static byte[] Bytes(Random rng, int n)
    {
        var b = new byte[n];
        rng.NextBytes(b);
        return b;
    }

    /// <summary>Messages of every item kind the two streams carry, chunks of <paramref name="chunkBytes"/>.</summary>
    private static List<(PutBlocksRequest Put, GetBlocksResponse Get)> Messages(Random rng, int chunkBytes)
    {
        var chunk = new KvChunk { Data = UnsafeByteOperations.UnsafeWrap(Bytes(rng, chunkBytes)) };
        var block = new KvBlockHeader { Layer = rng.Next(32), StartPosition = rng.Next(1000), DataBytes = rng.Next(1 << 20), Heads = { new HeadTokens { Positions = { 1, 2, 300 } }, new HeadTokens() } };
        var layout = KvLayoutMapping.For(2, 2, 8, new RopeTable(8, 10000, RopeLayout.Halves), KvPrecision.Bf16);
        return
        [
            (new PutBlocksRequest { Chunk = chunk }, new GetBlocksResponse { Chunk = chunk }),
            (new PutBlocksRequest { Chunk = new KvChunk() }, new GetBlocksResponse { Chunk = new KvChunk() }),   // empty data: the item alone
            (new PutBlocksRequest { Block = block }, new GetBlocksResponse { Block = block }),
            (new PutBlocksRequest { Header = new PutHeader { SessionId = "s", Layout = layout, TokenCount = 7, BaseVersion = 3 } },
                new GetBlocksResponse { Kv = new KvHandle { SessionId = "s", Layout = layout, TokenCount = 7, Version = 4 } }),
            (new PutBlocksRequest(), new GetBlocksResponse()),   // nothing set
        ];
    }

    [Theory]
    [MemberData(nameof(EdgeSizes))]
    public void Serializes_every_message_to_Google_Protobuf_s_bytes(int chunkBytes)
    {
        var rng = new Random(chunkBytes);
        foreach (var (put, get) in Messages(rng, chunkBytes))
            foreach (int span in new[] { int.MaxValue, 1 << 16, 4096, 7, 1 })   // buffer writers that hand out spans of at most this many bytes
            {
                Assert.Equal(put.ToByteArray(), Serialize(KvWireCodec.PutBlocksRequestMarshaller, put, span));
                Assert.Equal(get.ToByteArray(), Serialize(KvWireCodec.GetBlocksResponseMarshaller, get, span));
            }
    }

    [Theory]
    [MemberData(nameof(EdgeSizes))]
    public void Parses_every_message_as_Google_Protobuf_does_however_the_payload_is_cut(int chunkBytes)
    {
        var rng = new Random(chunkBytes + 1);
        foreach (var (put, get) in Messages(rng, chunkBytes))
            for (int trial = 0; trial < 4; trial++)
            {
                var putBytes = put.ToByteArray();
                Assert.Equal(PutBlocksRequest.Parser.ParseFrom(putBytes), Deserialize(KvWireCodec.PutBlocksRequestMarshaller, Split(putBytes, rng)));
                var getBytes = get.ToByteArray();
                Assert.Equal(GetBlocksResponse.Parser.ParseFrom(getBytes), Deserialize(KvWireCodec.GetBlocksResponseMarshaller, Split(getBytes, rng)));
            }
    }

    /// <summary>
    /// With a block under way, a chunk item's bytes land in the block (exactly, wherever the payload's
    /// segments are cut, the header's tag and varints included) and the reader gets the delivered marker;
    /// a chunk that is not followed completes the block through the reader's own Add, as before.
    /// </summary>
    [Theory]
    [MemberData(nameof(EdgeSizes))]
    public void A_chunk_read_into_its_block_lands_bit_for_bit(int chunkBytes)
    {
        var rng = new Random(chunkBytes + 2);
        // A raw fp32 block (what the cache manager stores) just large enough: the chunk, then the rest in a second chunk.
        int tokens = (chunkBytes + 7) / 8;
        var source = Bytes(rng, tokens * 8);
        foreach (bool get in new[] { false, true })
        {
            var assembler = new KvWire.BlockAssembler(RawHeader(tokens), 1, KvPrecision.Fp32, widen: false);
            var sink = new KvChunkSink { Block = assembler };
            long before = KvWireCodec.DirectChunks;
            KvWireCodec.BeginReceive(sink);
            try
            {
                var first = source.AsMemory(0, chunkBytes);
                var chunk = ReadChunk(get, new KvChunk { Data = UnsafeByteOperations.UnsafeWrap(first) }, rng);
                Assert.True(KvWireCodec.IsDelivered(chunk));
                Assert.True(KvWireCodec.DirectChunks > before);
                if (chunkBytes < source.Length)
                {
                    var rest = ReadChunk(get, new KvChunk { Data = ByteString.CopyFrom(source, chunkBytes, source.Length - chunkBytes) }, rng);
                    Assert.True(KvWireCodec.IsDelivered(rest));
                }
                Assert.True(assembler.IsComplete);
                // Complete: another chunk does not fit, so it is parsed (a copy), and the reader's Add refuses it as before.
                var over = ReadChunk(get, new KvChunk { Data = ByteString.CopyFrom(1, 2, 3) }, rng);
                Assert.False(KvWireCodec.IsDelivered(over));
                Assert.Equal(new byte[] { 1, 2, 3 }, over.Data.ToByteArray());
                Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => assembler.Add(over)).StatusCode);
            }
            finally
            {
                KvWireCodec.EndReceive();
            }
            var stored = assembler.BuildWire();
            Assert.Equal(source, stored.Keys.Concat(stored.Values).ToArray());
        }
    }

    /// <summary>16-bit data widened as it arrives: cut by the payload's segments anywhere (mid-element
    /// included), the block equals the one the reader's own Add builds from the same chunks.</summary>
    [Theory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    [InlineData("fp32")]
    public void Widened_chunks_read_from_split_payloads_equal_the_reference_assembly(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        var rng = new Random(3);
        const int headDim = 8;
        int[] tokensPerHead = [37, 37, 37];
        var positions = tokensPerHead.Select(n => Enumerable.Range(0, n).ToArray()).ToArray();
        float[] Data() => Enumerable.Range(0, tokensPerHead.Sum() * headDim).Select(_ => (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-20, 12)))).ToArray();
        var block = new KvLayerBlock(4, positions, Data(), Data());
        var bytes = KvWire.Chunks(block, p).SelectMany(c => c.Data.ToByteArray()).ToArray();
        var header = KvWire.Header(block, p);

        var reference = new KvWire.BlockAssembler(header, headDim, p);
        var direct = new KvWire.BlockAssembler(header, headDim, p);
        KvWireCodec.BeginReceive(new KvChunkSink { Block = direct });
        try
        {
            for (int offset = 0; offset < bytes.Length;)
            {
                int n = Math.Min(bytes.Length - offset, 1 + rng.Next(777));   // odd cuts: mid-element, across K/V
                var item = new GetBlocksResponse { Chunk = new KvChunk { Data = ByteString.CopyFrom(bytes, offset, n) } };
                reference.Add(item.Chunk);
                var read = Deserialize(KvWireCodec.GetBlocksResponseMarshaller, Split(item.ToByteArray(), rng));
                Assert.True(KvWireCodec.IsDelivered(read.Chunk));
                offset += n;
            }
        }
        finally
        {
            KvWireCodec.EndReceive();
        }
        var want = reference.Build();
        var got = direct.Build();
        Assert.Equal(want.Keys.Select(BitConverter.SingleToInt32Bits), got.Keys.Select(BitConverter.SingleToInt32Bits));
        Assert.Equal(want.Values.Select(BitConverter.SingleToInt32Bits), got.Values.Select(BitConverter.SingleToInt32Bits));
    }

    /// <summary>
    /// Mutated and truncated chunk items (tags, varints, lengths, extra fields), with a block under way:
    /// whatever the codec does must be what Google.Protobuf does: the same message, the same data delivered
    /// into the block, or a parse error; never data from a payload the parser reads differently.
    /// </summary>
    [Fact]
    public void Malformed_payloads_get_Google_Protobuf_s_answer()
    {
        var rng = new Random(17);
        int delivered = 0, parsed = 0, refused = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            int n = rng.Next(4) switch { 0 => 1 + rng.Next(4), 1 => 120 + rng.Next(20), 2 => 16370 + rng.Next(20), _ => 1 + rng.Next(3000) };
            var bytes = new GetBlocksResponse { Chunk = new KvChunk { Data = ByteString.CopyFrom(Bytes(rng, n)) } }.ToByteArray().ToList();
            switch (rng.Next(6))
            {
                case 0: bytes[rng.Next(Math.Min(bytes.Count, 6))] = (byte)rng.Next(256); break;          // a header byte
                case 1: bytes.RemoveRange(bytes.Count - 1 - rng.Next(Math.Min(3, bytes.Count - 1)), 1); break; // truncated
                case 2: bytes.AddRange(Bytes(rng, 1 + rng.Next(4))); break;                               // trailing bytes
                case 3: bytes.InsertRange(0, new GetBlocksResponse { Block = new KvBlockHeader { Layer = 1 } }.ToByteArray()); break; // another field first
                case 4: bytes.AddRange(new GetBlocksResponse { Chunk = new KvChunk { Data = ByteString.CopyFrom(9) } }.ToByteArray()); break; // the item twice
                default: bytes[rng.Next(bytes.Count)] ^= (byte)(1 << rng.Next(8)); break;                // any bit
            }
            var payload = bytes.ToArray();
            GetBlocksResponse? expected = null;
            try { expected = GetBlocksResponse.Parser.ParseFrom(payload); } catch (InvalidProtocolBufferException) { }

            int room = payload.Length + 8;
            var assembler = new KvWire.BlockAssembler(RawHeader(room / 8 + 1), 1, KvPrecision.Fp32, widen: false);
            KvWireCodec.BeginReceive(new KvChunkSink { Block = assembler });
            try
            {
                GetBlocksResponse got;
                try { got = Deserialize(KvWireCodec.GetBlocksResponseMarshaller, Split(payload, rng)); }
                catch (InvalidProtocolBufferException)
                {
                    Assert.Null(expected);
                    refused++;
                    continue;
                }
                Assert.NotNull(expected);
                if (KvWireCodec.IsDelivered(got.Chunk))
                {
                    Assert.Equal(GetBlocksResponse.ItemOneofCase.Chunk, expected!.ItemCase);
                    var stored = new byte[expected.Chunk.Data.Length];
                    // What landed: the first bytes of the block.
                    Array.Copy(ReadRaw(assembler, stored.Length), stored, stored.Length);
                    Assert.Equal(expected.Chunk.Data.ToByteArray(), stored);
                    delivered++;
                }
                else
                {
                    Assert.Equal(expected, got);
                    parsed++;
                }
            }
            finally
            {
                KvWireCodec.EndReceive();
            }
        }
        Assert.True(delivered > 100 && parsed > 100 && refused > 100, $"delivered {delivered}, parsed {parsed}, refused {refused}");
    }

    [Fact]
    public void Without_a_sink_or_a_block_chunks_are_parsed_as_usual()
    {
        var bytes = new PutBlocksRequest { Chunk = new KvChunk { Data = ByteString.CopyFrom(5, 6, 7) } }.ToByteArray();
        var plain = Deserialize(KvWireCodec.PutBlocksRequestMarshaller, new ReadOnlySequence<byte>(bytes));
        Assert.False(KvWireCodec.IsDelivered(plain.Chunk));
        Assert.Equal(new byte[] { 5, 6, 7 }, plain.Chunk.Data.ToByteArray());
        KvWireCodec.BeginReceive(new KvChunkSink());
        try
        {
            var noBlock = Deserialize(KvWireCodec.PutBlocksRequestMarshaller, new ReadOnlySequence<byte>(bytes));
            Assert.Equal(plain, noBlock);
        }
        finally
        {
            KvWireCodec.EndReceive();
        }
    }

    /// <summary>
    /// Generated clients (Google.Protobuf's codec, as any other language's client) against the cache
    /// manager, with chunks cut at odd sizes; and KvTransfer (this codec) reading and writing the same
    /// sessions: every byte as sent, both ways.
    /// </summary>
    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public async Task Plain_protobuf_clients_and_KvTransfer_read_each_other_s_blocks(string dtype)
    {
        var p = KvPrecisions.Parse(dtype);
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        var client = new LlmCluster.V1.CacheManager.CacheManagerClient(channel);
        const int layers = 3, heads = 2, headDim = 16, tokens = 2100;   // 269 KB per part in fp32
        var rng = new Random(5);
        float[] Data() => Enumerable.Range(0, heads * tokens * headDim).Select(_ => (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-10, 8)))).ToArray();
        var positions = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray();
        var blocks = Enumerable.Range(0, layers).Select(l => new KvLayerBlock(l, positions, Data(), Data())).ToList();
        var layout = KvLayoutMapping.For(layers, heads, headDim, new RopeTable(headDim, 10000, RopeLayout.Halves), p);
        byte[] WireBytes(KvLayerBlock b) => KvWire.Chunks(b, p).SelectMany(c => c.Data.ToByteArray()).ToArray();

        // A generated client puts, cutting each block's bytes at odd sizes; KvTransfer gets.
        using (var put = client.PutBlocks())
        {
            await put.RequestStream.WriteAsync(new PutBlocksRequest { Header = new PutHeader { SessionId = "plain-put", Layout = layout, Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens } });
            foreach (var b in blocks)
            {
                await put.RequestStream.WriteAsync(new PutBlocksRequest { Block = KvWire.Header(b, p) });
                var bytes = WireBytes(b);
                for (int offset = 0; offset < bytes.Length;)
                {
                    int n = Math.Min(bytes.Length - offset, 1 + rng.Next(100_000));
                    await put.RequestStream.WriteAsync(new PutBlocksRequest { Chunk = new KvChunk { Data = ByteString.CopyFrom(bytes, offset, n) } });
                    offset += n;
                }
            }
            await put.RequestStream.CompleteAsync();
            Assert.Equal(tokens, (await put.ResponseAsync).KeptTokens);
        }
        var (_, got, received) = await KvTransfer.GetAsync(channel, "plain-put", 0, CancellationToken.None);
        Assert.Equal(blocks.Sum(b => b.DataBytes) / 4 * p.Bytes(), received);
        for (int l = 0; l < layers; l++)
        {
            Assert.Equal(blocks[l].Keys.Select(x => KvWireTests.Reference(x, p)), got[l].Keys);
            Assert.Equal(blocks[l].Values.Select(x => KvWireTests.Reference(x, p)), got[l].Values);
        }

        // KvTransfer puts; a generated client gets the bytes as they were sent.
        await KvTransfer.PutAsync(channel, new PutHeader { SessionId = "codec-put", Layout = layout, Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens }, blocks, CancellationToken.None);
        using var get = client.GetBlocks(new GetBlocksRequest { SessionId = "codec-put" });
        var streamed = new List<(KvBlockHeader Header, List<byte> Bytes)>();
        await foreach (var item in get.ResponseStream.ReadAllAsync())
        {
            if (item.ItemCase == GetBlocksResponse.ItemOneofCase.Block) streamed.Add((item.Block, []));
            else if (item.ItemCase == GetBlocksResponse.ItemOneofCase.Chunk) streamed[^1].Bytes.AddRange(item.Chunk.Data.ToByteArray());
        }
        Assert.Equal(layers, streamed.Count);
        for (int l = 0; l < layers; l++)
        {
            Assert.Equal(KvWire.Header(blocks[l], p), streamed[l].Header);
            Assert.Equal(WireBytes(blocks[l]), streamed[l].Bytes.ToArray());
        }
    }

    /// <summary>Concurrent gets started from one flow each read into their own blocks (each call's sink is its own).</summary>
    [Fact]
    public async Task Concurrent_gets_from_one_flow_each_get_their_own_bytes()
    {
        var options = TestCluster.Options(ServiceRole.CacheManager);
        await using var cm = await ServiceHost.StartAsync(options, Cluster.CacheManager.CacheManagerService.CreateAsync);
        using var channel = GrpcChannels.Create(cm.GrpcAddress);
        const int layers = 4, heads = 2, headDim = 8, tokens = 1000;
        var layout = KvLayoutMapping.For(layers, heads, headDim, new RopeTable(headDim, 10000, RopeLayout.Halves), KvPrecision.Fp32);
        var positions = Enumerable.Range(0, heads).Select(_ => Enumerable.Range(0, tokens).ToArray()).ToArray();
        var sessions = Enumerable.Range(0, 4).Select(s =>
        {
            var rng = new Random(s);
            float[] Data() => Enumerable.Range(0, heads * tokens * headDim).Select(_ => (float)rng.NextDouble() + s).ToArray();
            return (Id: $"concurrent-{s}", Blocks: Enumerable.Range(0, layers).Select(l => new KvLayerBlock(l, positions, Data(), Data())).ToList());
        }).ToList();
        foreach (var (id, blocks) in sessions)
            await KvTransfer.PutAsync(channel, new PutHeader { SessionId = id, Layout = layout, Policy = PolicyMapping.ToWire("dense"), TokenCount = tokens }, blocks, CancellationToken.None);
        long before = KvWireCodec.DirectChunks;
        for (int round = 0; round < 3; round++)
        {
            var got = await Task.WhenAll(sessions.Select(s => KvTransfer.GetAsync(channel, s.Id, 0, CancellationToken.None)));
            for (int s = 0; s < sessions.Count; s++)
                for (int l = 0; l < layers; l++)
                {
                    Assert.Equal(sessions[s].Blocks[l].Keys, got[s].Blocks[l].Keys);
                    Assert.Equal(sessions[s].Blocks[l].Values, got[s].Blocks[l].Values);
                }
        }
        Assert.True(KvWireCodec.DirectChunks - before >= 3 * sessions.Count * layers * 2);
    }

    private static KvBlockHeader RawHeader(int tokens) =>
        new() { Layer = 0, DataBytes = tokens * 8L, Heads = { new HeadTokens { Positions = { Enumerable.Range(0, tokens) } } } };

    /// <summary>The first <paramref name="n"/> bytes written into a raw block (it is completed with zeros to build it).</summary>
    private static byte[] ReadRaw(KvWire.BlockAssembler assembler, int n)
    {
        long missing = assembler.DataBytes - n;
        assembler.Add(new byte[missing]);
        var b = assembler.BuildWire();
        return b.Keys.Concat(b.Values).Take(n).ToArray();
    }

    /// <summary>The chunk as a PutBlocksRequest or GetBlocksResponse item (the same bytes: field 3 of both), read from a split payload.</summary>
    private static KvChunk ReadChunk(bool get, KvChunk chunk, Random rng)
    {
        var item = new GetBlocksResponse { Chunk = chunk }.ToByteArray();
        return get
            ? Deserialize(KvWireCodec.GetBlocksResponseMarshaller, Split(item, rng)).Chunk
            : Deserialize(KvWireCodec.PutBlocksRequestMarshaller, Split(item, rng)).Chunk;
    }

    /// <summary>The payload as a sequence of segments cut at random places (sometimes one segment, sometimes every byte apart at the start).</summary>
    private static ReadOnlySequence<byte> Split(byte[] payload, Random rng)
    {
        var cuts = new SortedSet<int>();
        switch (rng.Next(4))
        {
            case 0: break;                                                                  // contiguous
            case 1: for (int i = 1; i < Math.Min(payload.Length, 12); i++) cuts.Add(i); break; // byte by byte through the framing
            default: for (int i = rng.Next(1, 8); i > 0 && payload.Length > 1; i--) cuts.Add(rng.Next(1, payload.Length)); break;
        }
        Segment? first = null, last = null;
        int start = 0;
        foreach (int end in cuts.Append(payload.Length))
        {
            var memory = payload.AsMemory(start, end - start);
            if (first is null) first = last = new Segment(memory, 0);
            else last = last!.Append(memory);
            start = end;
        }
        return first is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(first, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }

    private static T Deserialize<T>(Marshaller<T> marshaller, ReadOnlySequence<byte> payload) => marshaller.ContextualDeserializer(new TestDeserializationContext(payload));

    private static byte[] Serialize<T>(Marshaller<T> marshaller, T message, int maxSpan)
    {
        var context = new TestSerializationContext(maxSpan);
        marshaller.ContextualSerializer(message, context);
        var bytes = context.Result ?? throw new InvalidOperationException("the serializer did not complete");
        if (context.PayloadLength is int length) Assert.Equal(length, bytes.Length);
        return bytes;
    }

    private sealed class TestDeserializationContext(ReadOnlySequence<byte> payload) : DeserializationContext
    {
        public override int PayloadLength => (int)payload.Length;
        public override byte[] PayloadAsNewBuffer() => payload.ToArray();
        public override ReadOnlySequence<byte> PayloadAsReadOnlySequence() => payload;
    }

    /// <summary>A serialization context whose buffer writer hands out spans of at most maxSpan bytes (never less than asked for).</summary>
    private sealed class TestSerializationContext(int maxSpan) : SerializationContext, IBufferWriter<byte>
    {
        private readonly ArrayBufferWriter<byte> _writer = new();
        public int? PayloadLength { get; private set; }
        public byte[]? Result { get; private set; }

        public override void Complete(byte[] payload) => Result = payload;
        public override void Complete() => Result = _writer.WrittenSpan.ToArray();
        public override void SetPayloadLength(int payloadLength) => PayloadLength = payloadLength;
        public override IBufferWriter<byte> GetBufferWriter() => this;

        public void Advance(int count) => _writer.Advance(count);
        public Memory<byte> GetMemory(int sizeHint = 0) => _writer.GetMemory(sizeHint)[..Math.Max(Math.Max(sizeHint, 1), Math.Min(maxSpan, _writer.GetMemory(sizeHint).Length))];
        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }
}
