using ILGPU;
using ILGPU.Runtime;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>A device buffer that grows to the largest size asked for and is reused between calls, so a
/// decode step allocates nothing once the shapes have been seen. Calls on one accelerator stream are
/// ordered, so reusing it from call to call is safe.</summary>
internal sealed class DeviceScratch<T>(Accelerator accelerator) : IDisposable where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    /// <summary>A view of at least <paramref name="length"/> elements (contents undefined).</summary>
    public ArrayView<T> Get(long length)
    {
        if (_buffer is null || _buffer.Length < length)
        {
            _buffer?.Dispose();
            // Grow by half again so that slowly lengthening attention rows do not reallocate every step.
            _buffer = accelerator.Allocate1D<T>(Math.Max(length, (_buffer?.Length ?? 0) * 3 / 2));
        }
        return _buffer.View.SubView(0, length);
    }

    /// <summary>Uploads <paramref name="data"/> and returns its view.</summary>
    public ArrayView<T> Upload(ReadOnlySpan<T> data)
    {
        var view = Get(Math.Max(1, data.Length));
        if (!data.IsEmpty) view.SubView(0, data.Length).CopyFromCPU(data);
        return view;
    }

    public void Dispose() => _buffer?.Dispose();
}
