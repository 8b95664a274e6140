using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>A host-memory tensor: either 64-byte-aligned native memory it owns, or a borrowed
/// pointer (a memory-mapped fp32 weight) that it never frees.</summary>
internal sealed unsafe class CpuTensor : Tensor
{
    private readonly bool _owned;
    private float* _pointer;

    private CpuTensor(float* pointer, long length, bool owned)
    {
        _pointer = pointer;
        Length = length;
        _owned = owned;
    }

    public override long Length { get; }

    public float* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(CpuTensor));

    public Span<float> Span(long offset, int length) => new(Pointer + offset, length);

    public static CpuTensor Allocate(long length)
    {
        var bytes = (nuint)Math.Max(1, length) * sizeof(float);
        var p = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(p, bytes);
        return new CpuTensor(p, length, owned: true);
    }

    public static CpuTensor Borrow(float* pointer, long length) => new(pointer, length, owned: false);

    public override void Dispose()
    {
        if (_owned && _pointer != null) NativeMemory.AlignedFree(_pointer);
        _pointer = null;
    }
}
