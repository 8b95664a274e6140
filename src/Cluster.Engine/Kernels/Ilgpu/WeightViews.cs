using ILGPU;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Reads one weight element as fp32. Kernels that read weights are generic over this, so
/// the fp32 and bf16 variants are one source (ILGPU specializes struct generics at compile time).</summary>
internal interface IWeightView
{
    float Load(long index);
}

internal readonly struct F32Weights : IWeightView
{
    public readonly ArrayView<float> View;

    public F32Weights(ArrayView<float> view) => View = view;

    public float Load(long index) => View[index];
}

internal readonly struct Bf16Weights : IWeightView
{
    public readonly ArrayView<ushort> View;

    public Bf16Weights(ArrayView<ushort> view) => View = view;

    // bf16 is the top half of an fp32: widening is a shift.
    public float Load(long index) => Interop.IntAsFloat((uint)View[index] << 16);
}

/// <summary>fp32 -> bf16 with round to nearest even (what PyTorch's .to(torch.bfloat16) does for finite values).</summary>
internal static class Bf16
{
    public static ushort FromFloatBits(uint bits) => (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
