using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Serving.Kv;
using Grpc.Net.Client;
using LlmCluster.V1;

namespace Cluster.IntegrationTests;

/// <summary>KV for the store's eviction and spill tests, built from a formula so expected data is independent of the code under test.</summary>
internal static class KvTestData
{
    public static readonly KvShape Shape = new(2, 2, 4, new RopeTable(4, 10000, RopeLayout.Halves));

    /// <summary>Bytes of a whole cache of <paramref name="tokens"/> tokens of <see cref="Shape"/> (K and V, fp32).</summary>
    public static long BytesOf(int tokens) => (long)Shape.Layers * Shape.KvHeads * tokens * Shape.HeadDim * 4 * 2;

    /// <summary>
    /// A whole cache of <paramref name="tokens"/> tokens whose floats are arbitrary bit patterns
    /// (NaNs with payloads, negative zero, subnormals among them) derived from (seed, layer, index),
    /// and whose positions are spread out, so a round trip that changes any bit or position shows.
    /// </summary>
    public static List<WireKvBlock> Blocks(int tokens, int seed = 0) => Enumerable.Range(0, Shape.Layers).Select(l =>
    {
        var positions = Enumerable.Range(0, Shape.KvHeads).Select(h => Enumerable.Range(0, tokens).Select(t => t * 3 + h + seed).ToArray()).ToArray();
        int n = Shape.KvHeads * tokens * Shape.HeadDim;
        return Fp32(new KvLayerBlock(l, positions, Floats(seed, l, 0, n), Floats(seed, l, 1, n)));
    }).ToList();

    /// <summary>An fp32 block in its wire form: its floats' little-endian bytes, copied here (not by the code under test).</summary>
    public static WireKvBlock Fp32(KvLayerBlock b)
    {
        static byte[] Bytes(float[] x) => x.SelectMany(f => BitConverter.GetBytes(BitConverter.SingleToInt32Bits(f))).ToArray();
        return new WireKvBlock(b.Layer, b.Positions, KvPrecision.Fp32, Bytes(b.Keys), Bytes(b.Values));
    }

    private static float[] Floats(int seed, int layer, int kv, int n) => Enumerable.Range(0, n).Select(i =>
    {
        uint x = (uint)(seed * 73856093 ^ layer * 19349663 ^ kv * 83492791 ^ i * 2654435761u);
        x ^= x >> 15; x *= 0x2c1b3c6d; x ^= x >> 12;
        // Every 7th is a special value whose bits a lossy path would change.
        return (i % 7) switch
        {
            3 => BitConverter.Int32BitsToSingle(unchecked((int)(0x7FC00000u | (x & 0x3FFFFF)))),   // NaN with a payload
            5 => i % 2 == 0 ? -0f : BitConverter.Int32BitsToSingle((int)(x & 0x7FFFFF)),           // negative zero, subnormal
            _ => BitConverter.Int32BitsToSingle(unchecked((int)x)),
        };
    }).ToArray();

    /// <summary>Asserts <paramref name="actual"/> holds exactly <paramref name="expected"/>, bit for bit.</summary>
    public static void AssertSameBits(IReadOnlyList<WireKvBlock> expected, IReadOnlyList<WireKvBlock> actual)
    {
        Xunit.Assert.Equal(expected.Count, actual.Count);
        for (int b = 0; b < expected.Count; b++)
        {
            Xunit.Assert.Equal(expected[b].Layer, actual[b].Layer);
            Xunit.Assert.Equal(expected[b].Positions.Length, actual[b].Positions.Length);
            for (int h = 0; h < expected[b].Positions.Length; h++) Xunit.Assert.Equal(expected[b].Positions[h], actual[b].Positions[h]);
            Xunit.Assert.Equal(expected[b].Precision, actual[b].Precision);
            Xunit.Assert.Equal(expected[b].Keys, actual[b].Keys);
            Xunit.Assert.Equal(expected[b].Values, actual[b].Values);
        }
    }

    /// <summary>
    /// Announces a put of <paramref name="blocks"/> and streams it layer by layer, with a
    /// <see cref="KvTransfer.GetAsync"/> of the session started once the first layer is in: the get must
    /// still be waiting 200 ms later (it follows the put), and both are awaited once the rest is sent.
    /// </summary>
    public static async Task<(PutBlocksResponse Stored, (KvHandle Handle, List<KvLayerBlock> Blocks, long Bytes) Followed)> PutFollowedAsync(
        GrpcChannel channel, PutHeader header, IReadOnlyList<KvLayerBlock> blocks)
    {
        await new LlmCluster.V1.CacheManager.CacheManagerClient(channel).ReservePutAsync(new ReservePutRequest { SessionId = header.SessionId });
        var layers = System.Threading.Channels.Channel.CreateUnbounded<KvLayerBlock>();
        var put = KvTransfer.PutAsync(channel, header, layers.Reader, CancellationToken.None);
        layers.Writer.TryWrite(blocks[0]);
        var follower = KvTransfer.GetAsync(channel, header.SessionId, 0, CancellationToken.None);
        await Task.Delay(200);
        Xunit.Assert.False(follower.IsCompleted, "the get follows the put: it cannot end before the put's last layer");
        foreach (var b in blocks.Skip(1)) layers.Writer.TryWrite(b);
        layers.Writer.Complete();
        var (stored, _) = await put;
        return (stored, await follower);
    }

    /// <summary>A clock the test moves by hand.</summary>
    public sealed class ManualTime : TimeProvider
    {
        private DateTimeOffset _now = DateTimeOffset.UnixEpoch;
        public void Advance(TimeSpan by) => _now += by;
        public void Advance(double seconds) => _now += TimeSpan.FromSeconds(seconds);
        public override DateTimeOffset GetUtcNow() => _now;
    }
}
