using ILGPU;
using ILGPU.Algorithms;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>One thread per element: embedding lookup, SwiGLU, residual add, fp32 -> bf16.</summary>
internal static class ElementwiseKernels
{
    /// <summary>x[t, d] = table[tokens[t], d]; one thread per (t, d).</summary>
    public static void Embed<TW>(Index1D i, TW table, ArrayView<int> tokens, ArrayView<float> x, int dim)
        where TW : struct, IWeightView
    {
        int t = i / dim, d = i - t * dim;
        x[i] = table.Load((long)tokens[t] * dim + d);
    }

    /// <summary>gate = silu(gate) * up = gate * sigmoid(gate) * up (same order of products as CpuBackend).</summary>
    public static void SwiGlu(Index1D i, ArrayView<float> gate, ArrayView<float> up)
    {
        float g = gate[i];
        float sig = 1f / (1f + XMath.Exp(-g));
        gate[i] = g * sig * up[i];
    }

    public static void Add(Index1D i, ArrayView<float> x, ArrayView<float> y) => x[i] += y[i];

    /// <summary>Rounds activations to bf16 for a bf16 x bf16 cuBLAS product.</summary>
    public static void ToBf16(Index1D i, ArrayView<float> x, ArrayView<ushort> y) =>
        y[i] = Bf16.FromFloatBits(Interop.FloatAsInt(x[i]));
}
