using System.Runtime.InteropServices;
using Cluster.Engine.KvCache;
using Cluster.Serving.Kv;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Issue 17: a decode worker diffs its checkpoints against a digest of the last one (16 bytes per
/// row) instead of a copy of it; what it sends must be exactly what a row-by-row comparison of the two
/// caches sends.</summary>
public sealed class KvDigestTests
{
    private const int HeadDim = 8;

    private static KvLayerBlock Block(int layer, int[][] positions, Random rng)
    {
        int rows = positions.Sum(p => p.Length);
        var keys = new float[rows * HeadDim];
        var values = new float[rows * HeadDim];
        for (int i = 0; i < keys.Length; i++) (keys[i], values[i]) = ((float)rng.NextDouble(), (float)rng.NextDouble());
        return new KvLayerBlock(layer, positions, keys, values);
    }

    /// <summary>The comparison the digest replaces, written out here: per head, tokens only in next or whose rows differ in any bit are sent, tokens only in previous removed.</summary>
    private static (int[][] Sent, int[][] Removed) Reference(KvLayerBlock previous, KvLayerBlock next)
    {
        var sent = new int[next.Positions.Length][];
        var removed = new int[next.Positions.Length][];
        int pRow = 0, nRow = 0;
        for (int h = 0; h < next.Positions.Length; h++)
        {
            var pp = previous.Positions[h];
            var np = next.Positions[h];
            var before = pp.Select((pos, i) => (pos, row: pRow + i)).ToDictionary(x => x.pos, x => x.row);
            sent[h] = [.. np.Where((pos, j) => !before.TryGetValue(pos, out int r) || !RowEqual(previous, r, next, nRow + j))];
            removed[h] = [.. pp.Where(pos => !np.Contains(pos))];
            pRow += pp.Length;
            nRow += np.Length;
        }
        return (sent, removed);
    }

    private static bool RowEqual(KvLayerBlock a, int ra, KvLayerBlock b, int rb) =>
        MemoryMarshal.AsBytes(a.Keys.AsSpan(ra * HeadDim, HeadDim)).SequenceEqual(MemoryMarshal.AsBytes(b.Keys.AsSpan(rb * HeadDim, HeadDim)))
        && MemoryMarshal.AsBytes(a.Values.AsSpan(ra * HeadDim, HeadDim)).SequenceEqual(MemoryMarshal.AsBytes(b.Values.AsSpan(rb * HeadDim, HeadDim)));

    [Fact]
    public void A_delta_against_the_digest_sends_exactly_the_new_and_changed_rows_down_to_one_bit()
    {
        var rng = new Random(5);
        var previous = new List<KvLayerBlock>();
        var next = new List<KvLayerBlock>();
        for (int layer = 0; layer < 3; layer++)
        {
            // Head 0 appends (dense), head 1 evicts the oldest and appends (a window), head 2 keeps its set.
            var before = Block(layer, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 2, 4, 6, 8]], rng);
            var after = Block(layer, [[0, 1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6], [0, 2, 4, 6, 8]], rng);
            // The rows both hold start equal, then a few change by one bit in K or in V.
            CopyRows(before, after);
            Flip(after.Keys, Row(after, 0, 1) * HeadDim + 3);   // head 0, position 1: K
            Flip(after.Values, Row(after, 1, 3) * HeadDim + 7); // head 1, position 3: V
            if (layer == 1) Flip(after.Keys, Row(after, 2, 8) * HeadDim); // head 2, position 8, lowest bit of the first element
            previous.Add(before);
            next.Add(after);
        }
        var deltas = KvDelta.Diff(KvDigest.Of(previous, HeadDim), next, HeadDim, out var nextDigest);
        foreach (var d in deltas)
        {
            var (sent, removed) = Reference(previous[d.Layer], next[d.Layer]);
            Assert.Equal(sent, d.Sent.Positions);
            Assert.Equal(removed, d.Removed);
            // The sent rows carry next's values.
            for (int h = 0, row = 0; h < sent.Length; h++)
                foreach (int pos in sent[h])
                {
                    Assert.True(RowEqual(d.Sent, row, next[d.Layer], Row(next[d.Layer], h, pos)));
                    row++;
                }
        }
        Assert.Equal([[1, 5, 6], [3, 5, 6], []], deltas[0].Sent.Positions);
        Assert.Equal([[1, 5, 6], [3, 5, 6], [8]], deltas[1].Sent.Positions);
        Assert.Equal([[], [0, 1], []], deltas[0].Removed);
        // The digest made in the same pass is next's own: diffing next against it sends nothing.
        var none = KvDelta.Diff(nextDigest, next, HeadDim, out _);
        Assert.All(none, d => Assert.All(d.Sent.Positions, p => Assert.Empty(p)));
        Assert.All(none, d => Assert.All(d.Removed, p => Assert.Empty(p)));
    }

    [Fact]
    public void A_digest_holds_sixteen_bytes_a_row_beside_its_positions_not_the_rows()
    {
        // 1,800 tokens of one SmolLM2-135M layer (3 KV heads, head_dim 64): 2.8 MB of K and V.
        var positions = Enumerable.Range(0, 1800).ToArray();
        var block = new KvLayerBlock(0, [positions, positions, positions], new float[3 * 1800 * 64], new float[3 * 1800 * 64]);
        var digest = KvDigest.Of([block], 64);
        Assert.Equal(3L * 1800 * (16 + sizeof(int)), digest.Bytes);
        Assert.True(digest.Bytes * 20 < block.DataBytes, $"{digest.Bytes} bytes of digest for {block.DataBytes} of KV");
    }

    private static int Row(KvLayerBlock b, int head, int position)
    {
        int row = 0;
        for (int h = 0; h < head; h++) row += b.Positions[h].Length;
        return row + Array.IndexOf(b.Positions[head], position);
    }

    private static void CopyRows(KvLayerBlock from, KvLayerBlock to)
    {
        for (int h = 0; h < to.Positions.Length; h++)
            foreach (int pos in to.Positions[h].Intersect(from.Positions[h]))
            {
                from.Keys.AsSpan(Row(from, h, pos) * HeadDim, HeadDim).CopyTo(to.Keys.AsSpan(Row(to, h, pos) * HeadDim));
                from.Values.AsSpan(Row(from, h, pos) * HeadDim, HeadDim).CopyTo(to.Values.AsSpan(Row(to, h, pos) * HeadDim));
            }
    }

    private static void Flip(float[] data, int index) => data[index] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(data[index]) ^ 1);
}
