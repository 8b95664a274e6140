using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Host memory for weights converted at load time (e.g. fp32 to q8_0): each converted tensor lives
/// in its own 64-byte-aligned native buffer of exactly its format's size, so resident memory
/// follows the format. Disposing frees them all: it must outlive the tensors made from them.
/// </summary>
public sealed unsafe class WeightStore : IDisposable
{
    private readonly Dictionary<nint, long> _buffers = [];

    /// <summary>Bytes held now (converted buffers not yet released).</summary>
    public long Bytes { get { lock (_buffers) return _buffers.Values.Sum(); } }

    /// <summary><paramref name="source"/> in <paramref name="target"/>, row by row through fp32;
    /// the source itself when it already is.</summary>
    public WeightData Convert(WeightData source, WeightType target)
    {
        if (source.Type == target) return source;
        long rowBytes = WeightLayout.RowBytes(target, source.Columns);
        var dst = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, rowBytes * source.Rows), 64);
        lock (_buffers) _buffers.Add((nint)dst, rowBytes * source.Rows);
        var row = new float[source.Columns];
        for (long r = 0; r < source.Rows; r++)
        {
            source.CopyRowToFloat32(r, row);
            Quantize.Row(target, row, dst + r * rowBytes);
        }
        return new WeightData(dst, source.Elements, target, source.Columns);
    }

    /// <summary>Frees the buffer <paramref name="data"/> was converted into, if this store made it
    /// (a tensor made from it no longer reads it); data it did not make is left alone.</summary>
    public void Release(WeightData data)
    {
        lock (_buffers)
            if (_buffers.Remove((nint)data.Pointer)) NativeMemory.AlignedFree(data.Pointer);
    }

    public void Dispose()
    {
        lock (_buffers)
        {
            foreach (var p in _buffers.Keys) NativeMemory.AlignedFree((void*)p);
            _buffers.Clear();
        }
    }
}
