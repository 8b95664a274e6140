using Cluster.Engine.Kernels;
using Cluster.Engine.Kernels.Ilgpu;
using Cluster.Engine.Tests.Model;
using Xunit;

namespace Cluster.Engine.Tests.Kernels.Ilgpu;

/// <summary>--device parsing, the plain "no CUDA device" failure, and the cuBLAS binding up to the
/// point where the library or a device is missing.</summary>
public sealed class DeviceSelectionTests
{
    [Theory]
    [InlineData("cpu", DeviceKind.Cpu, 0)]
    [InlineData(null, DeviceKind.Cpu, 0)]
    [InlineData("CUDA", DeviceKind.Cuda, 0)]
    [InlineData("cuda:3", DeviceKind.Cuda, 3)]
    [InlineData("ilgpu-cpu", DeviceKind.IlgpuCpu, 0)]
    public void Valid_devices_parse(string? text, DeviceKind kind, int index) =>
        Assert.Equal(new DeviceSpec(kind, index), DeviceSpec.Parse(text));

    [Theory]
    [InlineData("gpu")]        // not a device name
    [InlineData("cuda:")]      // index missing
    [InlineData("cuda:-1")]    // negative index
    [InlineData("cuda:x")]     // not a number
    public void Invalid_devices_name_the_option(string text) =>
        Assert.Contains("--device", Assert.Throws<ArgumentException>(() => DeviceSpec.Parse(text)).Message);

    [Fact]
    public void Cuda_without_a_device_fails_with_one_plain_message()
    {
        if (CudaPresent()) return; // a GPU machine: the GPU checks cover this device
        var e = Assert.Throws<NoCudaDeviceException>(() => ComputeBackends.Create(DeviceSpec.Parse("cuda")));
        Assert.StartsWith("no CUDA device found: ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.IsAssignableFrom<InvalidOperationException>(e); // llmctl's CommandErrors turns it into exit 2
    }

    [Fact]
    public void Llmctl_with_cuda_and_no_device_prints_one_line_and_exits_2()
    {
        if (CudaPresent()) return;
        var (code, _, stderr) = Llmctl.Run("generate", "--model", "tiny-not-needed", "--device", "cuda", "--max-tokens", "1");
        Assert.Equal(2, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.StartsWith("error: no CUDA device found: "));
        Assert.DoesNotContain("   at ", stderr);
    }

    [Fact]
    public void An_explicit_cublas_path_that_does_not_exist_is_the_only_candidate_and_is_reported()
    {
        var missing = Path.Combine(Path.GetTempPath(), "no-such-dir", "libcublas.so.13");
        Assert.Equal([missing], CublasLibrary.Candidates(missing));
        Assert.Null(Cublas.TryCreate(0, out var reason, missing));
        Assert.Contains("libcublas not found", reason);
        Assert.Contains(missing, reason);
    }

    [Fact]
    public void A_folder_setting_finds_sonames_and_a_broken_library_fails_cleanly()
    {
        using var dir = new TempDir();
        var folder = dir.File("lib");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "libcublas.so.12"), "not an ELF file");
        Assert.Equal([Path.Combine(folder, "libcublas.so.12")], CublasLibrary.Candidates(folder));
        Assert.Null(Cublas.TryCreate(0, out var reason, folder));
        Assert.Contains("libcublas not found", reason);
    }

    [Fact]
    public void The_ilgpu_cpu_accelerator_reports_why_it_does_not_use_cublas()
    {
        using var b = new IlgpuBackend(new DeviceSpec(DeviceKind.IlgpuCpu));
        Assert.False(b.UsesCublas);
        Assert.Equal("not a CUDA device", b.CublasNote);
        Assert.Contains("ILGPU GEMM", b.Name);
    }

    private static bool CudaPresent()
    {
        try
        {
            using var b = ComputeBackends.Create(DeviceSpec.Parse("cuda"));
            return true;
        }
        catch (NoCudaDeviceException)
        {
            return false;
        }
    }
}
