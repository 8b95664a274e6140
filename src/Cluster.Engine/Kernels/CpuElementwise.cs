using System.Numerics.Tensors;

namespace Cluster.Engine.Kernels;

/// <summary>
/// The elementwise steps of a forward pass (RMSNorm, SwiGLU, residual add). A prefill's are large
/// (128 tokens: 74K values per norm and add, 197K per SwiGLU, 30 layers) and ran on one thread while
/// the other cores waited: they are split over the team from <see cref="SplitElements"/> values. Each
/// value's arithmetic is the same whichever part it falls in (norms per row; SwiGLU and add on slices
/// of whole 8-lane vectors), so the split changes no bits.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    /// <summary>From this many values an elementwise step is split over the threads; below (decode,
    /// batched decode) a fork/join costs more than it saves.</summary>
    private const long SplitElements = 1 << 16;

    private readonly ElementwiseWork _elementwise = new();

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, int rows, int dim, float eps) =>
        RunElementwise(ElementwiseKind.RmsNorm, Cpu(x).Pointer, Cpu(y).Pointer, Cpu(weight).Pointer, dim, eps, rows, (long)rows * dim);

    public void SwiGlu(Tensor gate, Tensor up, long length) =>
        RunElementwise(ElementwiseKind.SwiGlu, Cpu(gate).Pointer, Cpu(up).Pointer, null, 0, 0, length, length);

    public void Add(Tensor x, Tensor y, long length) =>
        RunElementwise(ElementwiseKind.Add, Cpu(x).Pointer, Cpu(y).Pointer, null, 0, 0, length, length);

    /// <summary>Runs one elementwise step over <paramref name="units"/> (rows or values): inline when small
    /// or when another thread holds the team (the reused argument object is then not ours to fill), else
    /// one part per thread.</summary>
    private void RunElementwise(ElementwiseKind kind, float* x, float* y, float* w, int dim, float eps, long units, long values)
    {
        if (values < SplitElements || _threads == 1 || !_team.TryAcquire())
        {
            ElementwiseWork.Range(kind, x, y, w, dim, eps, 0, units);
            return;
        }
        try
        {
            var work = _elementwise;
            work.X = x; work.Y = y; work.W = w;
            (work.Kind, work.Dim, work.Eps, work.Units, work.Parts) = (kind, dim, eps, units, _threads);
            _team.Run(work, _threads);
        }
        finally
        {
            _team.Release();
        }
    }

    internal enum ElementwiseKind { RmsNorm, SwiGlu, Add }

    /// <summary>One elementwise call's arguments, reused (see <see cref="WorkerTeam"/>). Part p covers
    /// units [Units·p/Parts, Units·(p+1)/Parts), value ranges rounded to whole 16-value slices.</summary>
    private sealed class ElementwiseWork : IPartedWork
    {
        public ElementwiseKind Kind;
        public float* X, Y, W;
        public int Dim, Parts;
        public long Units;
        public float Eps;

        public void Run(int part)
        {
            long first = Units * part / Parts, end = Units * (part + 1) / Parts;
            if (Kind != ElementwiseKind.RmsNorm && Parts > 1)
            {
                first = part == 0 ? 0 : first & ~15L;
                end = part == Parts - 1 ? Units : end & ~15L;
            }
            Range(Kind, X, Y, W, Dim, Eps, first, end);
        }

        /// <summary>Units [first, end) of one step: rows of RMSNorm(X)·W to Y; X = silu(X)·Y; X += Y.</summary>
        public static void Range(ElementwiseKind kind, float* X, float* Y, float* W, int Dim, float Eps, long first, long end)
        {
            if (first >= end) return;
            switch (kind)
            {
                case ElementwiseKind.RmsNorm:
                    var w = new ReadOnlySpan<float>(W, Dim);
                    for (long r = first; r < end; r++)
                    {
                        var xs = new ReadOnlySpan<float>(X + r * Dim, Dim);
                        var ys = new Span<float>(Y + r * Dim, Dim);
                        var scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xs) / Dim + Eps);
                        TensorPrimitives.Multiply(xs, scale, ys);
                        TensorPrimitives.Multiply(ys, w, ys);
                    }
                    break;
                case ElementwiseKind.SwiGlu:
                    // silu(g) * u = g * sigmoid(g) * u, in chunks so the sigmoid scratch stays on the stack.
                    Span<float> sig = stackalloc float[1024];
                    for (long i = first; i < end; i += sig.Length)
                    {
                        int n = (int)Math.Min(sig.Length, end - i);
                        var g = new Span<float>(X + i, n);
                        TensorPrimitives.Sigmoid(g, sig[..n]);
                        TensorPrimitives.Multiply(g, sig[..n], g);
                        TensorPrimitives.Multiply(g, new ReadOnlySpan<float>(Y + i, n), g);
                    }
                    break;
                default:
                    for (long i = first; i < end; i += int.MaxValue / 2)
                    {
                        int n = (int)Math.Min(int.MaxValue / 2, end - i);
                        TensorPrimitives.Add(new ReadOnlySpan<float>(X + i, n), new ReadOnlySpan<float>(Y + i, n), new Span<float>(X + i, n));
                    }
                    break;
            }
        }
    }
}
