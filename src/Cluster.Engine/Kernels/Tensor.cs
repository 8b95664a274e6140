namespace Cluster.Engine.Kernels;

/// <summary>
/// A buffer owned by a compute backend (host memory for the CPU backend, device memory for an
/// accelerator). Activations are always float32; a weight tensor may be kept in its stored format
/// (<see cref="Format"/>), which <see cref="IComputeBackend.MatMul"/> and
/// <see cref="IComputeBackend.Embed"/> dispatch on. Model code only passes tensors back to the
/// backend that made them; it never reads their memory directly, so a GPU backend can slot in
/// without touching the model.
/// </summary>
public abstract class Tensor : IDisposable
{
    /// <summary>Number of elements.</summary>
    public abstract long Length { get; }

    /// <summary>Element format: F32 for every activation; a weight's stored format otherwise.</summary>
    public virtual WeightType Format => WeightType.F32;

    public abstract void Dispose();
}
