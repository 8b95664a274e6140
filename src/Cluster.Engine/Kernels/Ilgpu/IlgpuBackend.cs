using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Cluster.Engine.Model;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// <see cref="IComputeBackend"/> on an ILGPU accelerator: an NVIDIA GPU (kernels compiled to PTX by
/// ILGPU and loaded through the driver; matrix products through cuBLAS when libcublas is found) or
/// ILGPU's CPU accelerator, which runs the very same kernels on host threads so that CI checks them
/// against <see cref="CpuBackend"/>. Weights are uploaded once (fp32, or bf16 for matrices) and stay
/// on the device with the activations and the KV cache; the host sees only what the model copies
/// back (logits, and KV blocks for a handoff). The KV cache's positions and lengths stay host arrays
/// (the model and the policies read them); kernels get the lengths as launch arguments.
/// Not thread-safe, like the model that owns it.
/// </summary>
public sealed unsafe partial class IlgpuBackend : IComputeBackend
{
    /// <summary>Weights with at most this many elements stay fp32 in bf16 mode: they are the norm
    /// vectors (RMSNorm reads them in fp32) and tiny matrices, which cost nothing.</summary>
    public const long SmallTensor = 1 << 16;

    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly Cublas? _cublas;
    private readonly int _tile, _reduce, _attentionGroup;
    private readonly Kernels _k;
    private readonly DeviceScratch<int> _ints;
    private readonly DeviceScratch<ushort> _xBf16;
    private readonly MemoryBuffer1D<byte, Stride1D.Dense>? _cublasWorkspace;
    private const long CublasWorkspaceBytes = 32L << 20;

    /// <param name="device">cuda[:N] or ilgpu-cpu.</param>
    /// <param name="precision">How weight matrices are stored on the device.</param>
    /// <param name="useCublas">False forces ILGPU's own GEMM on CUDA too (to compare the two).</param>
    /// <exception cref="NoCudaDeviceException">CUDA asked for and not usable.</exception>
    public IlgpuBackend(DeviceSpec device, WeightPrecision precision = WeightPrecision.Float32, bool useCublas = true)
    {
        (_context, _accelerator) = IlgpuDevices.Open(device);
        Device = device;
        Precision = precision;
        // Group sizes are launch choices: the GPU takes 16x16 GEMM tiles and 256-thread reductions;
        // ILGPU's default CPU device allows 16 threads per group (4x4 tiles).
        int maxGroup = Math.Min(256, _accelerator.MaxNumThreadsPerGroup);
        _reduce = 1 << (31 - int.LeadingZeroCount(maxGroup));
        _tile = Math.Min(16, 1 << ((31 - int.LeadingZeroCount(maxGroup)) / 2));
        // Fused attention spreads a decode row's keys over as many threads as a group may have.
        _attentionGroup = 1 << (31 - int.LeadingZeroCount(Math.Min(1024, _accelerator.MaxNumThreadsPerGroup)));
        try
        {
            _k = new Kernels(_accelerator);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // E.g. a driver that rejects ILGPU's PTX: say which device and why, in one line.
            var name = _accelerator.Name;
            _accelerator.Dispose();
            _context.Dispose();
            throw new InvalidOperationException($"ILGPU could not load its kernels on {device} ({name}): {e.GetType().Name}: {e.Message}", e);
        }
        _ints = new DeviceScratch<int>(_accelerator);
        _xBf16 = new DeviceScratch<ushort>(_accelerator);
        InitKvScratch();
        if (DeviceProfile.Enabled) _profile = new DeviceProfile(_accelerator);
        GroupedKernels = _accelerator.AcceleratorType != AcceleratorType.CPU;
        if (_accelerator is CudaAccelerator cuda)
        {
            if (useCublas)
            {
                _accelerator.Bind();
                _cublas = Cublas.TryCreate(((CudaStream)cuda.DefaultStream).StreamPtr, out var reason);
                CublasNote = _cublas is null ? reason : null;
                if (_cublas is not null)
                {
                    _cublasWorkspace = _accelerator.Allocate1D<byte>(CublasWorkspaceBytes);
                    _cublas.SetWorkspace(_cublasWorkspace.View.AsContiguous().LoadEffectiveAddressAsPtr(), CublasWorkspaceBytes);
                }
            }
        }
        else CublasNote = "not a CUDA device";
    }

    public DeviceSpec Device { get; }
    public WeightPrecision Precision { get; }

    /// <summary>Why cuBLAS is not used (null when it is).</summary>
    public string? CublasNote { get; }

    public bool UsesCublas => _cublas is not null;

    /// <summary>Whether kernels with thread groups are used (GPU default): the shared-memory tiled GEMM
    /// and the group reductions of RMSNorm and softmax. Off on the CPU accelerator, whose group barriers
    /// are OS-thread rendezvous, in favor of one-thread-per-output variants; settable so that tests
    /// check both kinds there.</summary>
    public bool GroupedKernels { get; set; }

    /// <summary>Whether any weight matrix went to the device in bf16: then the model's products already
    /// round their inputs, and attention's cuBLAS products may use TF32 tensor cores too. A model whose
    /// matrices all stayed fp32 keeps exact fp32 attention.</summary>
    private bool _reducedPrecisionProducts;

    public string Name =>
        $"{Device} ({_accelerator.Name}, {(Precision == WeightPrecision.BFloat16 ? "bf16" : "fp32")} weights, " +
        (_cublas is not null ? $"cuBLAS {Path.GetFileName(_cublas.LibraryPath)}" : $"ILGPU GEMM{(Device.Kind == DeviceKind.Cuda ? $": {CublasNote}" : "")}") + ")";

    public Tensor Allocate(long length)
    {
        Enter();
        return IlgpuTensor.AllocateF32(_accelerator, length);
    }

    public Tensor LoadWeights(WeightData source)
    {
        Enter();
        bool bf16 = Precision == WeightPrecision.BFloat16 && source.Elements > SmallTensor;
        var t = bf16 ? IlgpuTensor.AllocateBf16(_accelerator, source.Elements) : IlgpuTensor.AllocateF32(_accelerator, source.Elements);
        _reducedPrecisionProducts |= bf16;
        WeightUpload.Copy(source, t);
        return t;
    }

    public void CopyFromHost(ReadOnlySpan<float> source, Tensor destination, long offset = 0)
    {
        using var scope = Enter("copy to device");
        if (!source.IsEmpty) Dev(destination).F32.SubView(offset, source.Length).CopyFromCPU(source);
    }

    public void CopyToHost(Tensor source, long offset, Span<float> destination)
    {
        using var scope = Enter("copy to host");
        if (!destination.IsEmpty) Dev(source).F32.SubView(offset, destination.Length).CopyToCPU(destination);
    }

    public void Embed(Tensor table, ReadOnlySpan<int> tokens, int dim, Tensor x)
    {
        using var scope = Enter("embed");
        var t = Dev(table);
        var vocab = t.Length / dim;
        foreach (var id in tokens)
            if ((uint)id >= vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} is outside the vocabulary (0..{vocab - 1})");
        if (tokens.IsEmpty) return;
        var ids = _ints.Upload(tokens);
        if (t.IsBf16) _k.EmbedBf16(tokens.Length * dim, new Bf16Weights(t.Bf16), ids, Dev(x).F32, dim);
        else _k.EmbedF32(tokens.Length * dim, new F32Weights(t.F32), ids, Dev(x).F32, dim);
    }

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, int rows, int dim, float eps)
    {
        using var scope = Enter("rmsnorm");
        if (rows == 0) return;
        if (!GroupedKernels)
        {
            _k.RmsNormRow(rows, Dev(x).F32, Dev(weight).F32, Dev(y).F32, dim, eps);
            return;
        }
        _k.RmsNorm(new KernelConfig(rows, _reduce, SharedMemoryConfig.RequestDynamic<float>(_reduce)), Dev(x).F32, Dev(weight).F32, Dev(y).F32, dim, eps);
    }

    public void MatMul(Tensor x, Tensor w, Tensor y, int rows, int inDim, int outDim, int xRowOffset = 0)
    {
        Enter(); // not Enter(string): that would forget the bf16 copy of x that this call may reuse
        using var scope = Profile(_profile is null ? "" : $"matmul {(Dev(w).IsBf16 ? "bf16" : "fp32")} n={outDim} k={inDim}");
        if (rows == 0) return;
        IlgpuTensor xt = Dev(x), wt = Dev(w), yt = Dev(y);
        long xOffset = (long)xRowOffset * inDim;
        if (_cublas is not null)
        {
            if (wt.IsBf16)
            {
                // cuBLAS's bf16 path takes both operands in bf16: round this call's rows of x first.
                long count = (long)rows * inDim;
                var xb = _xBf16.Get(count);
                // Q, K and V (and gate and up) read the same normed rows: round them once.
                if (!ReferenceEquals(_bf16Of.Tensor, xt) || _bf16Of.Offset != xOffset || _bf16Of.Count != count)
                {
                    using (Profile("matmul input to bf16"))
                        _k.ToBf16(checked((int)count), xt.F32.SubView(xOffset, count), xb);
                    _bf16Of = (xt, xOffset, count);
                }
                _cublas.MatMulTransposed(xb.LoadEffectiveAddressAsPtr(), wt.Address(0), yt.Address(0), rows, inDim, outDim, bf16: true);
                if (ReferenceEquals(yt, _bf16Of.Tensor)) _bf16Of = default;
            }
            else _cublas.MatMulTransposed(xt.Address(xOffset), wt.Address(0), yt.Address(0), rows, inDim, outDim, bf16: false);
            return;
        }
        var shape = new GemmShape(rows, inDim, outDim, xOffset);
        if (!GroupedKernels)
        {
            if (wt.IsBf16) _k.SimpleBf16(checked(rows * outDim), xt.F32, new Bf16Weights(wt.Bf16), yt.F32, shape);
            else _k.SimpleF32(checked(rows * outDim), xt.F32, new F32Weights(wt.F32), yt.F32, shape);
            return;
        }
        var grid = new Index2D((outDim + _tile - 1) / _tile, (rows + _tile - 1) / _tile);
        var config = new KernelConfig(grid, new Index2D(_tile, _tile), SharedMemoryConfig.RequestDynamic<float>(2 * _tile * _tile));
        if (wt.IsBf16) _k.GemmBf16(config, xt.F32, new Bf16Weights(wt.Bf16), yt.F32, shape);
        else _k.GemmF32(config, xt.F32, new F32Weights(wt.F32), yt.F32, shape);
    }

    public void SwiGlu(Tensor gate, Tensor up, long length)
    {
        using var scope = Enter("swiglu");
        if (length > 0) _k.SwiGlu(checked((int)length), Dev(gate).F32, Dev(up).F32);
    }

    public void Add(Tensor x, Tensor y, long length)
    {
        using var scope = Enter("add");
        if (length > 0) _k.Add(checked((int)length), Dev(x).F32, Dev(y).F32);
    }

    /// <summary>Waits for every queued kernel (benchmarks time whole steps with it).</summary>
    public void Synchronize() => _accelerator.Synchronize();

    /// <summary>CUDA calls (cuBLAS's, and kernel launches) run on the context current on the calling
    /// thread, and the services call from pool threads: make it ours (cheap when it already is).</summary>
    private void Enter()
    {
        if (_accelerator.AcceleratorType == AcceleratorType.Cuda && !ReferenceEquals(Accelerator.Current, _accelerator)) _accelerator.Bind();
    }

    /// <summary><see cref="Enter()"/> for an operation that may write device memory (so the bf16 copy
    /// of a matmul input is stale), and its device time when profiling.</summary>
    private DeviceProfile.Scope Enter(string operation)
    {
        Enter();
        _bf16Of = default;
        return Profile(operation);
    }

    /// <summary>Which rows of which tensor the bf16 scratch holds (MatMul reuses them while nothing
    /// but matmuls that do not write that tensor ran since).</summary>
    private (IlgpuTensor? Tensor, long Offset, long Count) _bf16Of;

    /// <summary>A part of an operation's device time (nested inside its <see cref="Enter(string)"/>).</summary>
    private DeviceProfile.Scope Profile(string operation) => _profile is null ? default : _profile.Measure(operation);

    private readonly DeviceProfile? _profile;

    private static IlgpuTensor Dev(Tensor t) => t as IlgpuTensor ?? throw new ArgumentException("tensor belongs to another backend");

    public void Dispose()
    {
        _profile?.Report(Console.Error);
        _cublas?.Dispose();
        _cublasWorkspace?.Dispose();
        _ints.Dispose();
        _xBf16.Dispose();
        DisposeKvScratch();
        _accelerator.Dispose();
        _context.Dispose();
    }

    /// <summary>Every kernel, compiled once when the backend opens (ILGPU compiles on load).</summary>
    private sealed class Kernels(Accelerator a)
    {
        public readonly Action<Index1D, F32Weights, ArrayView<int>, ArrayView<float>, int> EmbedF32 =
            a.LoadAutoGroupedStreamKernel<Index1D, F32Weights, ArrayView<int>, ArrayView<float>, int>(ElementwiseKernels.Embed);
        public readonly Action<Index1D, Bf16Weights, ArrayView<int>, ArrayView<float>, int> EmbedBf16 =
            a.LoadAutoGroupedStreamKernel<Index1D, Bf16Weights, ArrayView<int>, ArrayView<float>, int>(ElementwiseKernels.Embed);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>> SwiGlu =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.SwiGlu);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>> Add =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(ElementwiseKernels.Add);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<ushort>> ToBf16 =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(ElementwiseKernels.ToBf16);
        public readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> RmsNorm =
            a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(NormKernels.RmsNorm);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> RmsNormRow =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(NormKernels.RmsNormRow);
        public readonly Action<KernelConfig, ArrayView<float>, F32Weights, ArrayView<float>, GemmShape> GemmF32 =
            a.LoadStreamKernel<ArrayView<float>, F32Weights, ArrayView<float>, GemmShape>(GemmKernels.MatMulTransposed);
        public readonly Action<KernelConfig, ArrayView<float>, Bf16Weights, ArrayView<float>, GemmShape> GemmBf16 =
            a.LoadStreamKernel<ArrayView<float>, Bf16Weights, ArrayView<float>, GemmShape>(GemmKernels.MatMulTransposed);
        public readonly Action<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, GemmShape> SimpleF32 =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, F32Weights, ArrayView<float>, GemmShape>(GemmKernels.MatMulSimple);
        public readonly Action<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, GemmShape> SimpleBf16 =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Bf16Weights, ArrayView<float>, GemmShape>(GemmKernels.MatMulSimple);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> Rope =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(RopeKernels.Rotate);
        public readonly Action<Index1D, ArrayView<float>, long, ArrayView<double>, ArrayView<double>, int> RotateKeys =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, long, ArrayView<double>, ArrayView<double>, int>(RopeKernels.RotateKeys);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, KvAppendShape> AppendKv =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, KvAppendShape>(KvKernels.Append);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, long, int> Gather =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, long, int>(KvKernels.Gather);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionShape> Scores =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionShape>(AttentionKernels.Scores);
        public readonly Action<KernelConfig, ArrayView<int>, ArrayView<float>, AttentionShape> Softmax =
            a.LoadStreamKernel<ArrayView<int>, ArrayView<float>, AttentionShape>(AttentionKernels.Softmax);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionShape> ExpandKv =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionShape>(AttentionKernels.ExpandKv);
        public readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionShape> FusedAttention =
            a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionShape>(AttentionKernels.Fused);
        public readonly Action<Index1D, ArrayView<int>, ArrayView<float>, AttentionShape> SoftmaxRow =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<float>, AttentionShape>(AttentionKernels.SoftmaxRow);
        public readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionShape> Output =
            a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, AttentionShape>(AttentionKernels.Output);
    }
}
