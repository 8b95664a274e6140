using System.Numerics.Tensors;

namespace Cluster.Engine.Kernels;

/// <summary>
/// The fallback matrix product when OpenBLAS is missing: SIMD dot products (TensorPrimitives),
/// output rows split across cores. Slower than OpenBLAS's blocked kernels, same results to rounding.
/// </summary>
internal static unsafe class ManagedMatMul
{
    /// <summary>y[m, n] = x[m, k] · w[n, k]^T.</summary>
    public static void MatMulTransposed(float* x, float* w, float* y, int m, int k, int n)
    {
        // Parallel over blocks of weight rows: each block of W is read once for all m inputs.
        const int block = 64;
        int blocks = (n + block - 1) / block;
        Parallel.For(0, blocks, b =>
        {
            int start = b * block, end = Math.Min(n, start + block);
            for (int j = start; j < end; j++)
            {
                var row = new ReadOnlySpan<float>(w + (long)j * k, k);
                for (int i = 0; i < m; i++)
                    y[(long)i * n + j] = TensorPrimitives.Dot(new ReadOnlySpan<float>(x + (long)i * k, k), row);
            }
        });
    }
}
