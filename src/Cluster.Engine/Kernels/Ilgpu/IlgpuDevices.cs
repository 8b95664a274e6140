using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>Opens the ILGPU context and accelerator that a <see cref="DeviceSpec"/> names.</summary>
internal static class IlgpuDevices
{
    /// <summary>Creates the accelerator; throws <see cref="NoCudaDeviceException"/> when CUDA was asked
    /// for and ILGPU sees no NVIDIA device (no driver library, no GPU, or the index is too large).</summary>
    public static (Context Context, Accelerator Accelerator) Open(DeviceSpec spec)
    {
        if (spec.Kind == DeviceKind.Cpu) throw new ArgumentException("the cpu device is CpuBackend, not an ILGPU accelerator");
        if (spec.Kind == DeviceKind.IlgpuCpu)
        {
            var cpu = Context.Create(b => b.CPU().EnableAlgorithms());
            return (cpu, cpu.CreateCPUAccelerator(0));
        }
        Context context;
        try
        {
            // Enables the PTX backend; ILGPU loads libcuda.so.1 (the driver) itself and compiles kernels
            // to PTX, so no CUDA toolkit is needed.
            context = Context.Create(b => b.Cuda().EnableAlgorithms());
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new NoCudaDeviceException($"ILGPU could not initialize CUDA ({e.GetType().Name}: {e.Message})");
        }
        var devices = context.GetCudaDevices();
        if (spec.Index >= devices.Count)
        {
            context.Dispose();
            throw new NoCudaDeviceException(devices.Count == 0
                ? "ILGPU sees no NVIDIA GPU (is the NVIDIA driver's libcuda.so.1 installed and a GPU visible?)"
                : $"cuda:{spec.Index} asked for, but only {devices.Count} device(s) exist");
        }
        try
        {
            return (context, devices[spec.Index].CreateAccelerator(context));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            context.Dispose();
            throw new NoCudaDeviceException($"cuda:{spec.Index} ({devices[spec.Index].Name}) did not open: {e.Message}");
        }
    }
}
