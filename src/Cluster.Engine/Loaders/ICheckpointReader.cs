using Cluster.Engine.Kernels;

namespace Cluster.Engine.Loaders;

/// <summary>Named weight tensors of one checkpoint, read in place from memory-mapped files.</summary>
public interface ICheckpointReader : IDisposable
{
    /// <summary>The tensor <paramref name="name"/> (a <see cref="TensorNames"/> name); throws
    /// <see cref="ModelFormatException"/> when it is missing or its shape is not <paramref name="shape"/>.</summary>
    WeightData Read(string name, long[] shape);

    /// <summary>Drops the resident pages of the memory-mapped files (they are re-read on use).</summary>
    void DropResidentPages() { }
}
