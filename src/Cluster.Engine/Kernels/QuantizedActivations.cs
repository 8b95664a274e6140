using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>Scratch for activations quantized to int8 blocks (<see cref="Quantize.ActivationRow"/>),
/// grown as needed and reused, so the decode loop allocates nothing.</summary>
internal sealed unsafe class QuantizedActivations : IDisposable
{
    private sbyte* _q;
    private float* _d;
    private int* _c;
    private long _capacityBlocks;

    /// <summary>x [rows, k] as rows × ceil(k/32) blocks: int8 values, one fp32 scale per block, and per
    /// block -128·Σq (<see cref="Q8Interleaved"/>'s bias correction).</summary>
    public void Quantize(float* x, int rows, int k, out sbyte* q, out float* d, out int* c)
    {
        int blocks = (k + 31) / 32;
        long need = (long)rows * blocks;
        if (need > _capacityBlocks)
        {
            Free();
            _q = (sbyte*)NativeMemory.AlignedAlloc((nuint)(need * 32), 64);
            _d = (float*)NativeMemory.AlignedAlloc((nuint)(need * sizeof(float)), 64);
            _c = (int*)NativeMemory.AlignedAlloc((nuint)(need * sizeof(int)), 64);
            _capacityBlocks = need;
        }
        for (int r = 0; r < rows; r++)
            Kernels.Quantize.ActivationRow(new ReadOnlySpan<float>(x + (long)r * k, k), _q + (long)r * blocks * 32, _d + (long)r * blocks);
        for (long i = 0; i < need; i++) _c[i] = -128 * Kernels.Quantize.BlockSum(_q + i * 32);
        q = _q;
        d = _d;
        c = _c;
    }

    private void Free()
    {
        if (_q != null) NativeMemory.AlignedFree(_q);
        if (_d != null) NativeMemory.AlignedFree(_d);
        if (_c != null) NativeMemory.AlignedFree(_c);
        _q = null;
        _d = null;
        _c = null;
        _capacityBlocks = 0;
    }

    public void Dispose() => Free();
}
