using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;

namespace Cluster.Serving.Kv;

/// <summary>
/// A block in its wire form: what the cache manager stores, spills and serves as it arrived, in the
/// precision the writer chose (issue 17), so that storing and serving it converts nothing.
/// <see cref="Keys"/> and <see cref="Values"/> hold head after head, [Positions[h].Length, headDim]
/// elements each, little-endian.
/// </summary>
public sealed record WireKvBlock(int Layer, int[][] Positions, KvPrecision Precision, byte[] Keys, byte[] Values)
{
    public long DataBytes => (long)Keys.Length + Values.Length;

    /// <summary>Tokens kept by the head that keeps the most.</summary>
    public int MostTokens => Positions.Max(p => p.Length);

    /// <summary>The block's values in <paramref name="precision"/> (rounded to nearest even).</summary>
    public static WireKvBlock From(KvLayerBlock block, KvPrecision precision)
    {
        var keys = new byte[block.Keys.Length * precision.Bytes()];
        var values = new byte[block.Values.Length * precision.Bytes()];
        KvConvert.Encode(block.Keys, keys, precision);
        KvConvert.Encode(block.Values, values, precision);
        return new WireKvBlock(block.Layer, block.Positions, precision, keys, values);
    }

    /// <summary>The block widened to fp32 (exact), for code that computes on it (compression).</summary>
    public KvLayerBlock ToFloats()
    {
        var keys = new float[Keys.Length / Precision.Bytes()];
        var values = new float[Values.Length / Precision.Bytes()];
        KvConvert.Decode(Keys, keys, Precision);
        KvConvert.Decode(Values, values, Precision);
        return new KvLayerBlock(Layer, Positions, keys, values);
    }
}
