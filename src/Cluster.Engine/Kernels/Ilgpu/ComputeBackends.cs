namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Makes the backend a <c>--device</c> value names: the one switch between CPU and GPU.</summary>
public static class ComputeBackends
{
    /// <param name="threads">CPU threads (the cpu device only).</param>
    /// <param name="precision">Weight storage on an ILGPU device; null means bf16 on CUDA (the fast
    /// path) and fp32 on ILGPU's CPU accelerator (the exact one).</param>
    /// <exception cref="NoCudaDeviceException">cuda was asked for and none is usable.</exception>
    public static IComputeBackend Create(DeviceSpec device, int? threads = null, WeightPrecision? precision = null) => device.Kind switch
    {
        DeviceKind.Cpu => new CpuBackend(threads),
        DeviceKind.Cuda => new IlgpuBackend(device, precision ?? WeightPrecision.BFloat16),
        _ => new IlgpuBackend(device, precision ?? WeightPrecision.Float32),
    };

    /// <summary>Parses "fp32" / "bf16" (null or empty: the device's default).</summary>
    public static WeightPrecision? ParsePrecision(string? text) => (text ?? "").Trim().ToLowerInvariant() switch
    {
        "" => null,
        "fp32" or "f32" or "float32" => WeightPrecision.Float32,
        "bf16" or "bfloat16" => WeightPrecision.BFloat16,
        _ => throw new ArgumentException($"--precision must be fp32 or bf16, got '{text}'"),
    };
}
