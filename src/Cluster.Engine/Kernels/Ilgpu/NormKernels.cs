using ILGPU;
using ILGPU.Algorithms;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>RMSNorm (Zhang and Sennrich 2019): one thread group per row, a shared-memory tree sum of squares.</summary>
internal static class NormKernels
{
    /// <summary>y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w; launch with one group per row, a
    /// power-of-two group size and that many floats of dynamic shared memory.</summary>
    public static void RmsNorm(ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, int dim, float eps)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int tid = Group.IdxX, size = Group.DimX;
        long row = (long)Grid.IdxX * dim;
        float sum = 0;
        for (int d = tid; d < dim; d += size)
        {
            float v = x[row + d];
            sum += v * v;
        }
        shared[tid] = sum;
        Group.Barrier();
        for (int s = size / 2; s > 0; s >>= 1)
        {
            if (tid < s) shared[tid] += shared[tid + s];
            Group.Barrier();
        }
        // Same expression as CpuBackend: multiply by the reciprocal, then by the weight.
        float scale = 1f / XMath.Sqrt(shared[0] / dim + eps);
        for (int d = tid; d < dim; d += size) y[row + d] = x[row + d] * scale * w[d];
    }

    /// <summary>The same, one thread per row with no barriers (the CPU accelerator's variant: its
    /// barriers are OS-thread rendezvous). Launch over rows.</summary>
    public static void RmsNormRow(Index1D r, ArrayView<float> x, ArrayView<float> w, ArrayView<float> y, int dim, float eps)
    {
        long row = (long)(int)r * dim;
        float sum = 0;
        for (int d = 0; d < dim; d++) sum += x[row + d] * x[row + d];
        float scale = 1f / XMath.Sqrt(sum / dim + eps);
        for (int d = 0; d < dim; d++) y[row + d] = x[row + d] * scale * w[d];
    }
}
