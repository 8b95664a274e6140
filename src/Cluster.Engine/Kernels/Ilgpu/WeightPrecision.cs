namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>How <see cref="IlgpuBackend"/> keeps weight matrices on the device. Compute is fp32 in
/// every case (activations, accumulators, KV cache).</summary>
public enum WeightPrecision
{
    /// <summary>fp32 as loaded: the exact mode the CPU-accelerator tests compare against CpuBackend.</summary>
    Float32,

    /// <summary>bf16 (round to nearest even on upload): half the memory traffic, and cuBLAS's bf16
    /// tensor-core path (activations are rounded to bf16 for the product, accumulation stays fp32).</summary>
    BFloat16,
}
