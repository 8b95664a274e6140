namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Which compute device runs the model.</summary>
public enum DeviceKind
{
    /// <summary>The host backend (<see cref="CpuBackend"/>: OpenBLAS or managed SIMD).</summary>
    Cpu,

    /// <summary>An NVIDIA GPU through ILGPU (PTX via the driver) and cuBLAS.</summary>
    Cuda,

    /// <summary>ILGPU's CPU accelerator: the GPU kernels run on host threads. Slow; it exists so that
    /// CI without a GPU checks the very kernels the GPU runs.</summary>
    IlgpuCpu,
}

/// <summary>A parsed <c>--device</c> value: <c>cpu</c>, <c>cuda</c>, <c>cuda:N</c> or <c>ilgpu-cpu</c>.</summary>
public readonly record struct DeviceSpec(DeviceKind Kind, int Index = 0)
{
    public static DeviceSpec Cpu => new(DeviceKind.Cpu);

    /// <summary>Parses a --device value; throws <see cref="ArgumentException"/> naming the option for anything else.</summary>
    public static DeviceSpec Parse(string? text)
    {
        var s = (text ?? "cpu").Trim().ToLowerInvariant();
        if (s is "" or "cpu") return Cpu;
        if (s == "ilgpu-cpu") return new DeviceSpec(DeviceKind.IlgpuCpu);
        if (s == "cuda") return new DeviceSpec(DeviceKind.Cuda);
        if (s.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(s[5..], out var n) && n >= 0)
            return new DeviceSpec(DeviceKind.Cuda, n);
        throw new ArgumentException($"--device must be cpu, cuda, cuda:N or ilgpu-cpu, got '{text}'");
    }

    public override string ToString() => Kind switch
    {
        DeviceKind.Cpu => "cpu",
        DeviceKind.IlgpuCpu => "ilgpu-cpu",
        _ => $"cuda:{Index}",
    };
}

/// <summary>Thrown when <c>--device cuda</c> finds no usable NVIDIA device (no driver, no GPU, or the
/// index is out of range). Its message is the one line the command line prints.</summary>
public sealed class NoCudaDeviceException(string reason) : InvalidOperationException($"no CUDA device found: {reason}");
