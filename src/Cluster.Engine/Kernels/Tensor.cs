namespace Cluster.Engine.Kernels;

/// <summary>
/// A float32 buffer owned by a compute backend (host memory for the CPU backend, device memory for
/// an accelerator). Model code only passes tensors back to the backend that made them; it never
/// reads their memory directly, so a GPU backend can slot in without touching the model.
/// </summary>
public abstract class Tensor : IDisposable
{
    /// <summary>Number of float32 elements.</summary>
    public abstract long Length { get; }

    public abstract void Dispose();
}
