using ILGPU;
using ILGPU.Runtime;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// A tensor in an ILGPU accelerator's memory. Activations and the KV cache are fp32; a weight may
/// instead be stored as bf16 (raw ushort bits), which only the kernels that read weights (Embed,
/// MatMul) accept. <see cref="Tensor.Length"/> always counts elements, whatever the storage.
/// </summary>
internal sealed class IlgpuTensor : Tensor
{
    private MemoryBuffer1D<float, Stride1D.Dense>? _f32;
    private MemoryBuffer1D<ushort, Stride1D.Dense>? _bf16;

    private IlgpuTensor(long length, MemoryBuffer1D<float, Stride1D.Dense>? f32, MemoryBuffer1D<ushort, Stride1D.Dense>? bf16)
    {
        Length = length;
        _f32 = f32;
        _bf16 = bf16;
    }

    public override long Length { get; }

    public bool IsBf16 => _bf16 is not null;

    /// <summary>The fp32 elements; throws for a bf16 weight (a kernel that cannot read it was handed one).</summary>
    public ArrayView<float> F32 => _f32?.View ?? (_bf16 is null
        ? throw new ObjectDisposedException(nameof(IlgpuTensor))
        : throw new ArgumentException("a bf16 weight was passed where an fp32 tensor is needed"));

    public ArrayView<ushort> Bf16 => _bf16?.View ?? throw new ArgumentException("not a bf16 tensor");

    /// <summary>Device address of element <paramref name="offset"/> (for cuBLAS).</summary>
    public nint Address(long offset) => IsBf16 ? Bf16.SubView(offset).LoadEffectiveAddressAsPtr() : F32.SubView(offset).LoadEffectiveAddressAsPtr();

    public static IlgpuTensor AllocateF32(Accelerator a, long length)
    {
        var b = a.Allocate1D<float>(Math.Max(1, length));
        b.MemSetToZero();
        return new IlgpuTensor(length, b, null);
    }

    public static IlgpuTensor AllocateBf16(Accelerator a, long length) =>
        new(length, null, a.Allocate1D<ushort>(Math.Max(1, length)));

    public override void Dispose()
    {
        _f32?.Dispose();
        _bf16?.Dispose();
        _f32 = null;
        _bf16 = null;
    }
}
