using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>A Q8_0 weight matrix repacked for the CPU's int8 kernels (<see cref="Q8Interleaved"/>), in
/// host memory it owns; the same bytes per weight as ggml's rows, so resident memory still follows the
/// format. The source rows are not read after packing (<see cref="CpuBackend.ReadsSource"/>).</summary>
internal sealed unsafe class Q8PackedWeight : Tensor
{
    private byte* _packed;

    public Q8PackedWeight(WeightData source)
    {
        if (source.Type != WeightType.Q8_0) throw new ArgumentException($"{WeightLayout.Name(source.Type)} weights are not Q8_0", nameof(source));
        Rows = source.Rows;
        Columns = source.Columns;
        Blocks = checked((int)((Columns + 31) / 32));
        long bytes = Q8Interleaved.Bytes(Rows, Blocks);
        _packed = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, bytes), 64);
        Q8Interleaved.Pack(source.Pointer, Rows, Blocks, _packed);
    }

    public long Rows { get; }
    public long Columns { get; }
    public int Blocks { get; }

    public override long Length => Rows * Columns;

    public override WeightType Format => WeightType.Q8_0;

    public byte* Pointer => _packed != null ? _packed : throw new ObjectDisposedException(nameof(Q8PackedWeight));

    /// <summary>Row <paramref name="row"/> as fp32 (the embedding lookup).</summary>
    public void DequantizeRow(long row, Span<float> destination) =>
        Q8Interleaved.DequantizeRow(Pointer, Blocks, row, destination[..checked((int)Columns)]);

    public override void Dispose()
    {
        var p = _packed;
        _packed = null;
        if (p != null) NativeMemory.AlignedFree(p);
    }
}
