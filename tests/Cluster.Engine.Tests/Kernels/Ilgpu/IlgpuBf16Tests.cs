using Cluster.Engine.Kernels;
using Cluster.Engine.Kernels.Ilgpu;
using Xunit;

namespace Cluster.Engine.Tests.Kernels.Ilgpu;

/// <summary>bf16 weight storage: a bf16 checkpoint tensor is kept bit for bit (so the device computes
/// with exactly the weights CpuBackend widens), an fp32 one is rounded to nearest even, and small
/// tensors (norm vectors) stay fp32.</summary>
public sealed unsafe class IlgpuBf16Tests
{
    [Fact]
    public void Bf16_weights_give_the_cpu_backends_products_and_embeddings()
    {
        int outDim = 300, inDim = 256; // 76,800 elements: above SmallTensor, so stored as bf16
        var rng = new Random(9);
        var bits = Enumerable.Range(0, outDim * inDim).Select(_ => (ushort)(BitConverter.SingleToUInt32Bits((float)(rng.NextDouble() - 0.5)) >> 16)).ToArray();
        var x = Enumerable.Range(0, 3 * inDim).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        using var gpu = new IlgpuBackend(new DeviceSpec(DeviceKind.IlgpuCpu), WeightPrecision.BFloat16);
        var cpu = new CpuBackend(threads: 1);
        fixed (ushort* p = bits)
        {
            var data = new WeightData((byte*)p, bits.Length, WeightType.BF16, columns: inDim); // [outDim, inDim]: rows for the embedding
            using var wc = cpu.LoadWeights(data);
            using var wg = gpu.LoadWeights(data);
            Assert.True(((IlgpuTensor)wg).IsBf16);
            using var xc = cpu.Allocate(x.Length);
            using var xg = gpu.Allocate(x.Length);
            cpu.CopyFromHost(x, xc);
            gpu.CopyFromHost(x, xg);
            using var yc = cpu.Allocate(3 * outDim);
            using var yg = gpu.Allocate(3 * outDim);
            cpu.MatMul(xc, wc, yc, 3, inDim, outDim);
            gpu.MatMul(xg, wg, yg, 3, inDim, outDim);
            var (a, b) = (new float[3 * outDim], new float[3 * outDim]);
            cpu.CopyToHost(yc, 0, a);
            gpu.CopyToHost(yg, 0, b);
            Assert.InRange(Model.TestModels.MaxAbsDiff(a, b), 0, 1e-5);

            // The same table read as an embedding [outDim, inDim].
            cpu.Embed(wc, [299, 0], inDim, yc);
            gpu.Embed(wg, [299, 0], inDim, yg);
            var (ea, eb) = (new float[2 * inDim], new float[2 * inDim]);
            cpu.CopyToHost(yc, 0, ea);
            gpu.CopyToHost(yg, 0, eb);
            Assert.Equal(ea, eb);
        }
    }

    [Fact]
    public void Fp32_weights_are_rounded_to_nearest_even_and_small_ones_stay_fp32()
    {
        Assert.Equal(0x3F80, Bf16.FromFloatBits(0x3F808000));   // tie, even below: down
        Assert.Equal(0x3F82, Bf16.FromFloatBits(0x3F818000));   // tie, odd below: up
        Assert.Equal(0x3F81, Bf16.FromFloatBits(0x3F808001));   // above the tie: up
        using var gpu = new IlgpuBackend(new DeviceSpec(DeviceKind.IlgpuCpu), WeightPrecision.BFloat16);
        var norm = new float[64];
        fixed (float* p = norm)
        {
            using var t = gpu.LoadWeights(WeightData.FromFloats(p, norm.Length));
            Assert.False(((IlgpuTensor)t).IsBf16);
        }
    }
}
