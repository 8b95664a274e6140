using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>Element types a checkpoint may store; compute is always fp32.</summary>
public enum WeightType { F32, F16, BF16 }

/// <summary>
/// A read-only view of one weight tensor in host memory (usually a memory-mapped file), in the
/// checkpoint's element type. The owner of the mapping must outlive every tensor made from it.
/// </summary>
public readonly unsafe struct WeightData(byte* pointer, long elements, WeightType type)
{
    public byte* Pointer { get; } = pointer;
    public long Elements { get; } = elements;
    public WeightType Type { get; } = type;

    public long ByteLength => Elements * (Type == WeightType.F32 ? 4 : 2);

    /// <summary>Converts to fp32 into <paramref name="destination"/> (length = <see cref="Elements"/>).</summary>
    public void CopyToFloat32(Span<float> destination)
    {
        switch (Type)
        {
            case WeightType.F32:
                new ReadOnlySpan<float>(Pointer, checked((int)Elements)).CopyTo(destination);
                break;
            case WeightType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(
                    new ReadOnlySpan<Half>(Pointer, checked((int)Elements)), destination);
                break;
            case WeightType.BF16:
                // bf16 is the top half of an fp32: widen by shifting the bits left 16.
                var src = new ReadOnlySpan<ushort>(Pointer, checked((int)Elements));
                var dst = MemoryMarshal.Cast<float, uint>(destination);
                for (int i = 0; i < src.Length; i++) dst[i] = (uint)src[i] << 16;
                break;
        }
    }

    /// <summary>Wraps fp32 host memory (e.g. a pinned or native buffer) as weight data.</summary>
    public static WeightData FromFloats(float* pointer, long elements) => new((byte*)pointer, elements, WeightType.F32);
}
