using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Cluster.Engine.Kernels;

namespace Cluster.Engine.Loaders;

/// <summary>
/// Writes a .safetensors file from fp32 tensors, storing each as F32, F16 or BF16. The header is
/// padded with spaces so the data starts 8-byte aligned, as the reference implementation does.
/// Tensors are produced one at a time by a callback, so a large checkpoint never sits in memory whole.
/// </summary>
public static class SafetensorsWriter
{
    public sealed record TensorSpec(string Name, long[] Shape, Action<Span<float>> Fill)
    {
        public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
    }

    public static void Write(string path, IReadOnlyList<TensorSpec> tensors, WeightType type, Action<int>? progress = null)
    {
        int elementSize = type == WeightType.F32 ? 4 : 2;
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        foreach (var t in tensors)
        {
            long bytes = t.Elements * elementSize;
            header[t.Name] = new { dtype = type.ToString(), shape = t.Shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        var json = JsonSerializer.Serialize(header);
        var padded = json + new string(' ', (8 - Encoding.UTF8.GetByteCount(json) % 8) % 8);
        var headerBytes = Encoding.UTF8.GetBytes(padded);

        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        stream.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
        stream.Write(headerBytes);
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            var values = new float[checked((int)t.Elements)];
            t.Fill(values);
            WriteAs(stream, values, type);
            progress?.Invoke(i + 1);
        }
    }

    private static void WriteAs(Stream stream, float[] values, WeightType type)
    {
        switch (type)
        {
            case WeightType.F32:
                stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
                break;
            case WeightType.F16:
                var halves = new Half[values.Length];
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, halves);
                stream.Write(MemoryMarshal.AsBytes(halves.AsSpan()));
                break;
            case WeightType.BF16:
                var bf = new ushort[values.Length];
                var bits = MemoryMarshal.Cast<float, uint>(values.AsSpan());
                for (int i = 0; i < bits.Length; i++) bf[i] = ToBFloat16(bits[i]);
                stream.Write(MemoryMarshal.AsBytes(bf.AsSpan()));
                break;
        }
    }

    /// <summary>Round-to-nearest-even fp32 -> bf16 (as PyTorch does), NaN kept quiet.</summary>
    private static ushort ToBFloat16(uint bits)
    {
        if ((bits & 0x7fffffff) > 0x7f800000) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7fff + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}
