using System.Runtime.InteropServices;
using ILGPU.Runtime;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Copies a host weight into a device tensor in bounded chunks (a 1B model's embedding is
/// 0.5-1 GB: converting it whole would double the host's peak memory).</summary>
internal static unsafe class WeightUpload
{
    private const int Chunk = 1 << 22;

    public static void Copy(WeightData source, IlgpuTensor target)
    {
        int width = source.Type switch { WeightType.F32 => 4, WeightType.F16 or WeightType.BF16 => 2, _ => 0 };
        if (width == 0)
        {
            // A format this backend does not know how to slice: widen it whole.
            var all = new float[source.Elements];
            source.CopyToFloat32(all);
            Store(all, 0, target);
            return;
        }
        // bf16 into a bf16 tensor is copied bit for bit.
        if (target.IsBf16 && source.Type == WeightType.BF16)
        {
            for (long i = 0; i < source.Elements; i += Chunk)
            {
                int n = (int)Math.Min(Chunk, source.Elements - i);
                target.Bf16.SubView(i, n).CopyFromCPU(new ReadOnlySpan<ushort>(source.Pointer + i * 2, n));
            }
            return;
        }
        var buffer = new float[(int)Math.Min(Chunk, source.Elements)];
        for (long i = 0; i < source.Elements; i += Chunk)
        {
            int n = (int)Math.Min(Chunk, source.Elements - i);
            new WeightData(source.Pointer + i * width, n, source.Type).CopyToFloat32(buffer.AsSpan(0, n));
            Store(buffer.AsSpan(0, n), i, target);
        }
    }

    private static void Store(ReadOnlySpan<float> values, long offset, IlgpuTensor target)
    {
        if (!target.IsBf16)
        {
            target.F32.SubView(offset, values.Length).CopyFromCPU(values);
            return;
        }
        var bits = MemoryMarshal.Cast<float, uint>(values);
        var rounded = new ushort[values.Length];
        for (int j = 0; j < bits.Length; j++) rounded[j] = Bf16.FromFloatBits(bits[j]);
        target.Bf16.SubView(offset, rounded.Length).CopyFromCPU<ushort>(rounded);
    }
}
