using System.IO.Hashing;
using System.Runtime.InteropServices;
using Cluster.Engine.KvCache;

namespace Cluster.Serving.Kv;

/// <summary>
/// What an incremental checkpoint is diffed against (<see cref="KvDelta.Diff(KvDigest, IReadOnlyList{KvLayerBlock}, int, out KvDigest)"/>):
/// per layer, each head's original positions and a 64-bit XXH3 of every token's K row and of its V row,
/// instead of a copy of the blocks. A decode worker holds one per sequence between checkpoints; a copy
/// held the whole cache again (83 MB for 1,800 tokens of SmolLM2-135M, kept until the next checkpoint,
/// in the GC heap), a digest 16 bytes of hashes and 4 of position per token, layer and head (3.3 MB there). A row is taken as
/// unchanged when both its hashes match: a changed row goes unsent only if both 64-bit hashes collide.
/// </summary>
public sealed class KvDigest
{
    /// <summary>One layer: <see cref="Keys"/> and <see cref="Values"/> hold a hash per row, in the block's row order (head after head).
    /// <see cref="Source"/> and <see cref="Revision"/>: the live cache layer it was read from (<see cref="KvDelta.Diff(KvDigest, Cluster.Engine.Kernels.IComputeBackend, SequenceKvCache, ref float[], out KvDigest)"/>)
    /// and that layer's <see cref="KvCacheLayer.Revision"/> then; null for a digest of blocks.</summary>
    public sealed record Layer(int Index, int[][] Positions, ulong[] Keys, ulong[] Values, KvCacheLayer? Source = null, long Revision = 0);

    private KvDigest(Layer[] layers) => Layers = layers;

    public IReadOnlyList<Layer> Layers { get; }

    /// <summary>Bytes the digest holds (positions and hashes), for tests and the memory note above.</summary>
    public long Bytes => Layers.Sum(l => l.Positions.Sum(p => (long)p.Length) * sizeof(int) + ((long)l.Keys.Length + l.Values.Length) * sizeof(ulong));

    public static KvDigest Of(IReadOnlyList<KvLayerBlock> blocks, int headDim) => new([.. blocks.Select(b => Of(b, headDim))]);

    /// <summary>Digests of blocks made one at a time (a fetch's blocks as they arrive), in any order of layers.</summary>
    public static KvDigest Of(IEnumerable<Layer> layers) => new([.. layers.OrderBy(l => l.Index)]);

    public static Layer Of(KvLayerBlock block, int headDim)
    {
        int rows = block.Keys.Length / headDim;
        var keys = new ulong[rows];
        var values = new ulong[rows];
        for (int r = 0; r < rows; r++)
        {
            keys[r] = RowHash(block.Keys.AsSpan(r * headDim, headDim));
            values[r] = RowHash(block.Values.AsSpan(r * headDim, headDim));
        }
        return new Layer(block.Layer, block.Positions, keys, values);
    }

    /// <summary>The digest of a block just restored into <paramref name="heldBy"/> (which then holds exactly its
    /// rows, in its order), bound to that layer at its current revision: the first checkpoint after a restore
    /// then reads only the rows appended since, as later ones do.</summary>
    public static Layer Of(KvLayerBlock block, int headDim, KvCacheLayer heldBy) => Of(block, headDim) with { Source = heldBy, Revision = heldBy.Revision };

    internal static ulong RowHash(ReadOnlySpan<float> row) => XxHash3.HashToUInt64(MemoryMarshal.AsBytes(row));
}
