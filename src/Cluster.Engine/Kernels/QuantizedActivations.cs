using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>Scratch for activations quantized to int8 blocks (<see cref="Quantize.ActivationRow"/>),
/// grown as needed and reused, so the decode loop allocates nothing.</summary>
internal sealed unsafe class QuantizedActivations : IDisposable
{
    private sbyte* _q;
    private float* _d;
    private long _capacityBlocks;

    /// <summary>x [rows, k] as rows × ceil(k/32) blocks: int8 values and one fp32 scale per block
    /// (rows × blocks scales, followed by the same scales of each group of 4 rows as [group][block][4]).</summary>
    public void Quantize(float* x, int rows, int k, out sbyte* q, out float* d)
    {
        int blocks = (k + 31) / 32;
        long need = (long)rows * blocks;
        if (need > _capacityBlocks)
        {
            Free();
            _q = (sbyte*)NativeMemory.AlignedAlloc((nuint)(need * 32), 64);
            _d = (float*)NativeMemory.AlignedAlloc((nuint)(2 * need * sizeof(float)), 64);
            _capacityBlocks = need;
        }
        for (int r = 0; r < rows; r++)
            Kernels.Quantize.ActivationRow(new ReadOnlySpan<float>(x + (long)r * k, k), _q + (long)r * blocks * 32, _d + (long)r * blocks);
        // After the rows' scales, those of each whole group of 4 rows interleaved per block
        // ([group][block][4]): the 4x2 tile reads a block's 4 row scales with one load.
        float* t = _d + (long)rows * blocks;
        for (int g = 0; g + 4 <= rows; g += 4)
            for (int b = 0; b < blocks; b++, t += 4)
                for (int i = 0; i < 4; i++) t[i] = _d[(long)(g + i) * blocks + b];
        q = _q;
        d = _d;
    }

    private void Free()
    {
        if (_q != null) NativeMemory.AlignedFree(_q);
        if (_d != null) NativeMemory.AlignedFree(_d);
        _q = null;
        _d = null;
        _capacityBlocks = 0;
    }

    public void Dispose() => Free();
}
