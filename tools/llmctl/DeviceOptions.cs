using System.CommandLine;
using Cluster.Engine.Kernels;
using Cluster.Engine.Kernels.Ilgpu;

namespace LlmCtl;

/// <summary>The --device / --precision options of the commands that run a model in this process.</summary>
internal sealed class DeviceOptions
{
    private readonly Option<string> _device = new("--device") { Description = "cpu, cuda, cuda:N (an NVIDIA GPU through ILGPU and cuBLAS) or ilgpu-cpu (the GPU kernels on host threads)", DefaultValueFactory = _ => "cpu" };
    private readonly Option<string?> _precision = new("--precision") { Description = "weights on a GPU device: bf16 (cuda's default) or fp32 (ilgpu-cpu's default)" };

    public void AddTo(Command cmd)
    {
        cmd.Options.Add(_device);
        cmd.Options.Add(_precision);
    }

    public DeviceSpec Device(ParseResult r) => DeviceSpec.Parse(r.GetValue(_device));

    /// <summary>Opens the backend; throws <see cref="NoCudaDeviceException"/> (one line, exit 2) when cuda has no device.</summary>
    public IComputeBackend Create(ParseResult r, int? threads) =>
        ComputeBackends.Create(Device(r), threads, ComputeBackends.ParsePrecision(r.GetValue(_precision)));
}
