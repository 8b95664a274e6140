using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;

namespace Cluster.Engine.Compression.Calibration;

/// <summary>
/// Calibrated Q-Filters (Godey et al. 2025): one unit-scale direction per layer and KV head,
/// [layers, kvHeads, headDim], in the half-split RoPE layout of the cached keys. Stored as one
/// safetensors tensor <c>q_filters</c> of that shape, the published layout, so published filters load too.
/// </summary>
public sealed class QFilters
{
    public const string TensorName = "q_filters";

    public QFilters(int layers, int kvHeads, int headDim, float[] data)
    {
        if (data.Length != layers * kvHeads * headDim)
            throw new ArgumentException($"q_filters holds {data.Length} floats, expected {layers}x{kvHeads}x{headDim}", nameof(data));
        (Layers, KvHeads, HeadDim, Data) = (layers, kvHeads, headDim, data);
    }

    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }

    /// <summary>[layers, kvHeads, headDim], row-major.</summary>
    public float[] Data { get; }

    public ReadOnlySpan<float> Filter(int layer, int kvHead) => Data.AsSpan((layer * KvHeads + kvHead) * HeadDim, HeadDim);

    public void Save(string path) =>
        SafetensorsWriter.Write(path, [new SafetensorsWriter.TensorSpec(TensorName, [Layers, KvHeads, HeadDim], d => Data.CopyTo(d))], WeightType.F32);

    /// <summary>Loads <c>q_filters</c> with the shape it was stored with (checked against each use's layout).</summary>
    public static QFilters Load(string path)
    {
        long[] shape;
        using (var file = SafetensorsFile.Open(path))
            shape = file.Shape(TensorName) is { Length: 3 } s ? s : throw new ModelFormatException(path, $"has no 3-dimensional '{TensorName}' tensor");
        return Load(path, (int)shape[0], (int)shape[1], (int)shape[2]);
    }

    /// <summary>Loads F32/F16/BF16 <c>q_filters</c>; throws <see cref="ModelFormatException"/> when it is
    /// missing or not [layers, kvHeads, headDim] for the model it is meant for.</summary>
    public static QFilters Load(string path, int layers, int kvHeads, int headDim)
    {
        using var file = SafetensorsFile.Open(path);
        var w = file.Read(TensorName, [layers, kvHeads, headDim]);
        var data = new float[w.Elements];
        w.CopyToFloat32(data);
        return new QFilters(layers, kvHeads, headDim, data);
    }
}
