using Cluster.Engine.Model;
using Cluster.Serving.Kv;
using Xunit;
using static Cluster.IntegrationTests.KvTestData;

namespace Cluster.IntegrationTests;

/// <summary>
/// --kv-spill (issue 21): evicted sessions written to a directory and read back bit for bit, served
/// again by a store restarted on the directory, everything spilled on dispose, damaged files a miss,
/// and the directory kept within its budget by deleting the oldest files.
/// </summary>
public sealed class KvSpillTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvspill-test-").FullName;
    private readonly ManualTime _time = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private KvSessionStore Store(int budgetTokens, long spillBytes = 1 << 30) =>
        new(BytesOf(budgetTokens), TimeSpan.FromHours(1), time: _time, minIdle: TimeSpan.FromSeconds(5), spill: new KvSpill(_dir, spillBytes));

    private string[] SpillFiles() => Directory.GetFiles(_dir, "*.kv");

    /// <summary>Three versions of "a" (the first kept, then checkpoints), each from its own seed.</summary>
    private static void PutA(KvSessionStore store)
    {
        store.Put("a", Shape, "dense", 10, Blocks(10, seed: 1), checkpoint: false, outputIndex: 0);
        store.Put("a", Shape, "dense", 17, Blocks(17, seed: 2), checkpoint: true, outputIndex: 7);
        store.Put("a", Shape, "dense", 23, Blocks(23, seed: 3), checkpoint: true, outputIndex: 13);
    }

    private static void AssertA(KvSessionStore store)
    {
        (long Version, int Tokens, int Seed, bool Checkpoint, int Output)[] expected = [(1, 10, 1, false, 0), (2, 17, 2, true, 7), (3, 23, 3, true, 13)];
        foreach (var (version, tokens, seed, checkpoint, output) in expected)
        {
            var kv = store.Get("a", version: version);
            Assert.NotNull(kv);
            Assert.Equal(("a", tokens, checkpoint, output, tokens, "dense"), (kv.SessionId, kv.TokensSeen, kv.Checkpoint, kv.OutputIndex, kv.TokensReceived, kv.Policy));
            Assert.Equal((2, 2, 4, RopeLayout.Halves), (kv.Shape.Layers, kv.Shape.KvHeads, kv.Shape.HeadDim, kv.Shape.Rope.Layout));
            // RoPE frequencies of a head of 4 with theta 10000: 1 and 10000^(-1/2), exactly as sent.
            Assert.Equal(new[] { 1.0, 1.0 / Math.Pow(10000, 0.5) }, kv.Shape.Rope.InverseFrequencies);
            AssertSameBits(Blocks(tokens, seed), kv.Layers);
        }
        Assert.Equal(3, store.Get("a")!.Version);
    }

    [Fact]
    public void An_evicted_session_is_spilled_and_read_back_bit_for_bit_with_its_versions()
    {
        using var store = Store(budgetTokens: 60);
        PutA(store);                                 // 50 tokens' worth
        _time.Advance(10);
        store.Put("b", Shape, "dense", 40, Blocks(40, seed: 9), false, 0);   // 90 > 60: "a" goes to the spill
        Assert.Equal(1, store.Evictions(KvEvictionReason.Lru));
        Assert.Single(SpillFiles());
        Assert.Equal(1, store.SpilledSessions);
        Assert.Equal(BytesOf(40), store.Bytes);

        _time.Advance(10);
        AssertA(store);                              // back in memory; "b" (idle 10 s) spilled to make room
        Assert.Equal(BytesOf(50), store.Bytes);
        Assert.Equal(1, store.SpilledSessions);
        Assert.Equal(2, store.Evictions(KvEvictionReason.Lru));
        _time.Advance(10);
        AssertSameBits(Blocks(40, seed: 9), store.Get("b")!.Layers);
    }

    [Fact]
    public void A_put_to_a_spilled_session_continues_its_versions()
    {
        using var store = Store(budgetTokens: 60);
        PutA(store);
        _time.Advance(10);
        store.Put("b", Shape, "dense", 40, Blocks(40), false, 0);
        _time.Advance(10);
        // Back from the spill with its three versions: 50 + 5 fits once "b" is evicted, and the new one is the fourth.
        var (kv, _) = store.Put("a", Shape, "dense", 5, Blocks(5, seed: 4), true, 20);
        Assert.Equal(4, kv.Version);
        Assert.Equal(10, store.Get("a", version: 1)!.TokensSeen);
        Assert.Equal(4, store.Get("a")!.Version);
        Assert.Equal(BytesOf(55), store.Bytes);
    }

    [Fact]
    public void A_store_restarted_on_the_directory_serves_what_was_evicted_and_what_dispose_spilled()
    {
        using (var first = Store(budgetTokens: 60))
        {
            PutA(first);
            _time.Advance(10);
            first.Put("b", Shape, "dense", 40, Blocks(40, seed: 9), false, 0);   // evicts "a" to the spill
            first.Put("c", Shape, "dense", 20, Blocks(20, seed: 8), true, 11);   // "b" and "c" are in memory at dispose
            Assert.Single(SpillFiles());
        }
        Assert.Equal(3, SpillFiles().Length);

        using var second = Store(budgetTokens: 1000);
        Assert.Equal(3, second.SpilledSessions);
        Assert.Equal(0, second.Sessions);
        AssertA(second);
        var b = second.Get("b")!;
        AssertSameBits(Blocks(40, seed: 9), b.Layers);
        var c = second.Get("c")!;
        Assert.Equal((20, true, 11, 1L), (c.TokensSeen, c.Checkpoint, c.OutputIndex, c.Version));
        AssertSameBits(Blocks(20, seed: 8), c.Layers);
        Assert.Empty(SpillFiles());                  // all back in memory: the files would only go stale
        Assert.Equal(BytesOf(110), second.Bytes);
    }

    [Fact]
    public void Release_forgets_a_spilled_session_too()
    {
        using var store = Store(budgetTokens: 60);
        PutA(store);
        _time.Advance(10);
        store.Put("b", Shape, "dense", 40, Blocks(40), false, 0);
        Assert.True(store.Release("a"));
        Assert.Empty(SpillFiles());
        Assert.Null(store.Get("a"));
        Assert.False(store.Release("a"));
    }

    [Theory]
    [InlineData("truncated")]
    [InlineData("flipped")]
    [InlineData("empty")]
    public void A_damaged_spill_file_is_a_miss_and_is_deleted(string damage)
    {
        using (var first = Store(budgetTokens: 100))
        {
            PutA(first);
            first.Put("b", Shape, "dense", 10, Blocks(10), false, 0);
        }
        var files = SpillFiles();
        Assert.Equal(2, files.Length);
        // Which file is "a"'s is not known here; damage both, then check each is a clean miss.
        foreach (var path in files)
        {
            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, damage switch
            {
                "truncated" => bytes[..^100],
                "flipped" => bytes.Select((x, i) => i == bytes.Length / 2 ? (byte)(x ^ 0x10) : x).ToArray(),
                _ => [],
            });
        }
        // A write cut short by a crash leaves only a temporary file, which is cleared at startup.
        File.WriteAllBytes(Path.Combine(_dir, "crashed.kv.tmp"), [1, 2, 3]);

        using var second = Store(budgetTokens: 100);
        Assert.False(File.Exists(Path.Combine(_dir, "crashed.kv.tmp")));
        Assert.Equal(2, second.SpilledSessions);
        Assert.Null(second.Get("a"));
        Assert.Null(second.Get("b"));
        Assert.Empty(SpillFiles());
        Assert.Equal(0, second.SpilledSessions);
        // The store still works.
        second.Put("a", Shape, "dense", 10, Blocks(10), false, 0);
        Assert.Equal(1, second.Get("a")!.Version);
    }

    [Fact]
    public void The_spill_stays_within_its_budget_by_deleting_the_oldest_files()
    {
        // A session of 30 tokens is a file of about 4.5 KB (3840 bytes of KV, 480 of positions, a header): two fit in 10000 bytes, three do not.
        using var store = Store(budgetTokens: 30, spillBytes: 10000);
        foreach (var id in new[] { "a", "b", "c", "d" })
        {
            if (id != "a") _time.Advance(10);
            store.Put(id, Shape, "dense", 30, Blocks(30, seed: id[0]), false, 0);   // evicts the previous one to the spill
        }
        Assert.Equal(3, store.Evictions(KvEvictionReason.Lru));
        Assert.Equal(1, store.Evictions(KvEvictionReason.SpillFull));
        Assert.Equal(2, store.SpilledSessions);
        Assert.InRange(store.SpilledBytes, 2 * BytesOf(30), 10000);
        Assert.Equal(2, SpillFiles().Length);
        Assert.Null(store.Get("a"));                 // the oldest spilled file was deleted

        // "d" was just used, so "b" cannot come back into memory; it is served from the spill and stays there.
        AssertSameBits(Blocks(30, seed: 'b'), store.Get("b")!.Layers);
        Assert.Equal(1, store.Sessions);
        Assert.Equal(2, store.SpilledSessions);
    }

    [Fact]
    public void The_oldest_spilled_files_go_first_across_a_restart()
    {
        using (var first = Store(budgetTokens: 30, spillBytes: 10000))
        {
            first.Put("a", Shape, "dense", 30, Blocks(30), false, 0);
            _time.Advance(10);
            first.Put("b", Shape, "dense", 30, Blocks(30), false, 0);   // "a" spilled, then "b" at dispose
        }
        using var second = Store(budgetTokens: 30, spillBytes: 10000);
        second.Put("c", Shape, "dense", 30, Blocks(30), false, 0);
        _time.Advance(10);
        second.Put("d", Shape, "dense", 30, Blocks(30), false, 0);      // "c" spilled: "a" (older than "b") is deleted
        Assert.Equal(1, second.Evictions(KvEvictionReason.SpillFull));
        Assert.Null(second.Get("a"));
        Assert.NotNull(second.Get("b"));
    }

    [Fact]
    public void A_bf16_session_is_stored_and_spilled_in_its_wire_form_at_half_the_bytes()
    {
        var shape = Shape with { Precision = Cluster.Engine.KvCache.KvPrecision.Bf16 };
        var rng = new Random(3);
        // Arbitrary 16-bit patterns: the store must keep them, not widen or re-round them.
        var blocks = Enumerable.Range(0, shape.Layers).Select(l =>
        {
            var positions = Enumerable.Range(0, shape.KvHeads).Select(_ => Enumerable.Range(0, 50).ToArray()).ToArray();
            byte[] Data() { var b = new byte[shape.KvHeads * 50 * shape.HeadDim * 2]; rng.NextBytes(b); return b; }
            return new WireKvBlock(l, positions, shape.Precision, Data(), Data());
        }).ToList();
        using var store = Store(budgetTokens: 60);
        store.Put("h", shape, "dense", 50, blocks, false, 0);
        Assert.Equal(BytesOf(50) / 2, store.Bytes);
        _time.Advance(10);
        store.Put("b", Shape, "dense", 40, Blocks(40), false, 0);   // 25 + 40 fp32 tokens' bytes > 60: "h" goes to the spill
        Assert.Single(SpillFiles());

        var back = store.Get("h")!;
        Assert.Equal(shape.Precision, back.Shape.Precision);
        AssertSameBits(blocks, back.Layers);
    }

    [Fact]
    public void A_block_whose_bytes_do_not_match_the_layout_s_precision_is_refused()
    {
        using var store = Store(budgetTokens: 100);
        var fp32 = Blocks(10);
        Assert.Throws<Cluster.Serving.Hosting.InvalidRequestException>(() =>
            store.Put("x", Shape with { Precision = Cluster.Engine.KvCache.KvPrecision.Fp16 }, "dense", 10, fp32, false, 0));
    }

    [Fact]
    public void A_format_1_file_from_before_the_dtype_reads_as_fp32()
    {
        // Written by hand in format 1's layout (KvSpillFile's doc): one version, one layer block, fp32 counted in floats.
        float[] keys = [1.5f, -2f, 0.25f, 3f, 4f, 5f, 6f, 7f], values = [-1f, 2f, -3f, 4f, -5f, 6f, -7f, 8f];
        var payload = new MemoryStream();
        using (var w = new BinaryWriter(payload, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write("old"); w.Write(1);                                  // session, versions
            w.Write(1); w.Write(1); w.Write(8); w.Write((int)RopeLayout.Halves);
            w.Write(4); foreach (var f in new[] { 1.0, 0.1, 0.01, 0.001 }) w.Write(f);
            w.Write(7L); w.Write(1); w.Write("dense"); w.Write(false); w.Write(0); w.Write(1);
            w.Write(1);                                                  // blocks
            w.Write(0); w.Write(1); w.Write(1); w.Write(42);             // layer 0, 1 head of 1 token at position 42
            w.Write(keys.Length); foreach (var f in keys) w.Write(f);
            w.Write(values.Length); foreach (var f in values) w.Write(f);
        }
        var bytes = payload.ToArray();
        var file = new MemoryStream();
        using (var w = new BinaryWriter(file, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            w.Write("LLMKVSPL"u8.ToArray()); w.Write(1); w.Write((long)bytes.Length);
            w.Write(System.Security.Cryptography.SHA256.HashData(bytes)); w.Write(bytes);
        }
        file.Position = 0;
        var kv = Assert.Single(KvSpillFile.Read(file, "old"));
        Assert.Equal(Cluster.Engine.KvCache.KvPrecision.Fp32, kv.Shape.Precision);
        Assert.Equal(7, kv.Version);
        var block = Assert.Single(kv.Layers).ToFloats();
        Assert.Equal([42], block.Positions.Single());
        Assert.Equal(keys, block.Keys);
        Assert.Equal(values, block.Values);
    }
}
