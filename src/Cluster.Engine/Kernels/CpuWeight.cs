namespace Cluster.Engine.Kernels;

/// <summary>A weight matrix kept in its stored format in host memory the CPU backend borrows (a
/// memory map or a <see cref="WeightStore"/> buffer); the kernels read it in place.</summary>
internal sealed unsafe class CpuWeight(WeightData data) : Tensor
{
    public WeightData Data { get; } = data;

    public override long Length => Data.Elements;

    public override WeightType Format => Data.Type;

    public byte* Pointer => Data.Pointer;

    public override void Dispose() { }
}
