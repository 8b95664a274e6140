using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Kernels;

/// <summary>
/// Kernels on the host. Matrix products dispatch on the weight's format: fp32 through OpenBLAS
/// (sgemv for one row, sgemm for several) or a managed SIMD fallback; bf16/fp16 and Q8_0 through
/// <see cref="HalfMatMul"/> reading the weights as stored, and Q8_0 repacked at load for the int8
/// kernels of <see cref="Q8Interleaved"/>. The rest
/// with System.Numerics.Tensors primitives.
/// </summary>
public sealed unsafe partial class CpuBackend : IComputeBackend
{
    private static int _fallbackNoticeShown;
    private readonly bool _useBlas;
    private readonly int _threads;
    private readonly bool _blasOwnThreads;

    /// <summary>Runs the parallel sections of decode (products, attention) without allocating; a
    /// second thread using this backend while it is busy falls back to Parallel.For.</summary>
    private readonly WorkerTeam _team;
    private readonly ProductWork _product = new();
    private readonly AttentionWork _attention = new();

    /// <param name="threads">Threads for matrix products and attention (default: all cores).</param>
    /// <param name="useOpenBlas">False forces the managed fallback (tests compare the two).</param>
    public CpuBackend(int? threads = null, bool useOpenBlas = true)
    {
        _threads = Math.Max(1, threads ?? Environment.ProcessorCount);
        _team = new WorkerTeam(_threads);
        _useBlas = useOpenBlas && OpenBlas.IsAvailable;
        // Threads are ours (see RowSplit); LLMCLUSTER_OPENBLAS_THREADS=1 restores OpenBLAS's own
        // threading of fp32 products, to measure the difference.
        _blasOwnThreads = Environment.GetEnvironmentVariable("LLMCLUSTER_OPENBLAS_THREADS") == "1";
        if (_useBlas) OpenBlas.SetThreads(_blasOwnThreads ? _threads : 1);
        else if (useOpenBlas && Interlocked.Exchange(ref _fallbackNoticeShown, 1) == 0)
            Console.Error.WriteLine($"note: {OpenBlas.LoadError}; using the managed SIMD matrix product (slower)");
    }

    /// <inheritdoc/>
    /// <remarks>fp32 and bf16 rows up to <see cref="Fp32Dots.MaxRows"/> and Q8_0 rows at any count go
    /// through one fixed-order multiply-add chain per output whatever the row count (checked by tests);
    /// sgemm packs and orders its sums by the shape, so beyond those, or with fp16 in sgemm (from 4
    /// rows), a row's bits depend on the others. Without OpenBLAS the managed kernels are per row.</remarks>
    public int RowExactRows(WeightType format) => format switch
    {
        WeightType.F32 when UseFp32Dots => Fp32Dots.MaxRows,
        WeightType.Q8_0 => int.MaxValue,
        WeightType.BF16 when UseFp32Dots => _useBlas ? Fp32Dots.MaxRows : int.MaxValue,
        WeightType.BF16 or WeightType.F16 => _useBlas ? HalfGemmRows - 1 : int.MaxValue,
        _ => _useBlas ? 1 : int.MaxValue,
    };

    public string Name => _useBlas ? $"cpu (OpenBLAS, {_threads} threads)" : $"cpu (managed SIMD, {_threads} threads)";

    public bool UsesOpenBlas => _useBlas;

    public Tensor Allocate(long length) => CpuTensor.Allocate(length);

    public Tensor LoadWeights(WeightData source)
    {
        // Every format but Q8_0 is used in place (zero copy from the memory map or the loader's buffer).
        if (source.Type == WeightType.Q8_0) return new Q8PackedWeight(source);
        if (source.Type == WeightType.F32) return CpuTensor.Borrow((float*)source.Pointer, source.Elements);
        if (!WeightLayout.HasKernels(source.Type))
            throw new NotSupportedException($"the CPU backend has no kernels for {WeightLayout.Name(source.Type)} weights (convert at load: q8_0, bf16, fp16, fp32)");
        return new CpuWeight(source);
    }

    public bool ReadsSource(Tensor weights) => weights is not Q8PackedWeight;

    public void CopyFromHost(ReadOnlySpan<float> source, Tensor destination, long offset = 0) =>
        source.CopyTo(Cpu(destination).Span(offset, source.Length));

    public void CopyToHost(Tensor source, long offset, Span<float> destination) =>
        Cpu(source).Span(offset, destination.Length).CopyTo(destination);

    public void Embed(Tensor table, ReadOnlySpan<int> tokens, int dim, Tensor x)
    {
        var vocab = table.Length / dim;
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tokens[i]} is outside the vocabulary (0..{vocab - 1})");
            var row = Cpu(x).Span((long)i * dim, dim);
            if (table is Q8PackedWeight p) p.DequantizeRow(tokens[i], row);       // one row dequantized
            else if (table is CpuWeight q) q.Data.CopyRowToFloat32(tokens[i], row);
            else Cpu(table).Span((long)tokens[i] * dim, dim).CopyTo(row);
        }
    }

    public void MatMul(Tensor x, Tensor w, Tensor y, int rows, int inDim, int outDim, int xRowOffset = 0)
    {
        var xp = Cpu(x).Pointer + (long)xRowOffset * inDim;
        var yp = Cpu(y).Pointer;
        if (w.Length != (long)inDim * outDim) throw new ArgumentException($"weight has {w.Length} elements, not {outDim}x{inDim}", nameof(w));
        if (w is Q8PackedWeight p)
        {
            // Every row count, prefill included: int8 products of 8 outputs per instruction beat
            // dequantizing for sgemm (bench/RESULTS.md), and every row stays exact.
            _activations.Quantize(xp, rows, inDim, out var xq, out var xd, out var xc);
            Q8Parts(p.Pointer, xq, xd, xc, yp, rows, p.Blocks, outDim);
            return;
        }
        if (w is CpuWeight q)
        {
            switch (q.Format)
            {
                case WeightType.BF16 when UseFp32Dots && (rows <= Fp32Dots.MaxRows || !_useBlas):
                    // Register tiles widening bf16 in place (as fp32's decode rows): faster than widening a
                    // tile to scratch for sgemm up to batched-decode sizes, and every row exact.
                    SplitProduct(ProductKind.Bf16Dots, xp, (float*)q.Pointer, yp, rows, inDim, outDim, Fp32DotPartCount(rows, inDim, outDim), 48);
                    return;
                case WeightType.BF16 or WeightType.F16:
                    if (_useBlas && rows >= HalfGemmRows) DequantGemm.Gemm(q.Format, q.Pointer, xp, yp, rows, inDim, outDim, _threads);
                    else HalfParts(q.Format, q.Pointer, xp, yp, rows, inDim, outDim);
                    return;
                default:
                    throw new NotSupportedException($"no matrix product for {WeightLayout.Name(q.Format)} weights");
            }
        }
        var wp = Cpu(w).Pointer;
        if (rows <= Fp32Dots.MaxRows && UseFp32Dots) Fp32DotParts(xp, wp, yp, rows, inDim, outDim);
        else if (!_useBlas) ManagedMatMul.MatMulTransposed(xp, wp, yp, rows, inDim, outDim);
        else BlasParts(xp, wp, yp, rows, inDim, outDim);
    }

    /// <summary>Decode and batched decode in fp32 go to <see cref="Fp32Dots"/> where 256-bit vectors are
    /// native; LLMCLUSTER_FP32_DOTS=0 sends them to OpenBLAS instead (for measuring).</summary>
    private static readonly bool UseFp32Dots = System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated
        && Environment.GetEnvironmentVariable("LLMCLUSTER_FP32_DOTS") != "0";

    /// <summary>fp32 decode rows through <see cref="Fp32Dots"/> on <see cref="_threads"/> slices of the weight rows.</summary>
    private void Fp32DotParts(float* x, float* w, float* y, int rows, int k, int n)
    {
        // Slices of 48 weight rows: whole 3-row tiles, and no two threads writing one cache line of y.
        SplitProduct(ProductKind.Fp32Dots, x, w, y, rows, k, n, Fp32DotPartCount(rows, k, n), 48);
    }

    /// <summary>One part for a small product (about 64K multiply-adds), else one per thread.</summary>
    private int Fp32DotPartCount(int rows, int k, int n) => (long)rows * k * n < 1 << 16 ? 1 : _threads;

    /// <summary>fp32 through single-threaded OpenBLAS calls on <see cref="_threads"/> slices of the weight rows.</summary>
    private void BlasParts(float* x, float* w, float* y, int rows, int k, int n)
    {
        // Small products are not worth a fork/join: about 64K multiply-adds.
        int parts = (long)rows * k * n < 1 << 16 || _blasOwnThreads ? 1 : _threads;
        SplitProduct(ProductKind.Blas, x, w, y, rows, k, n, parts, 16);
    }

    /// <summary>Q8_0 int8 products (<see cref="Q8Interleaved"/>) on the team; through .NET's pool when
    /// another thread holds it.</summary>
    private void Q8Parts(byte* w, sbyte* xq, float* xd, int* xc, float* y, int rows, int blocks, int n)
    {
        int parts = FormatPartCount(rows, (long)blocks * 32, n);
        if (parts == 1) Q8Interleaved.Range(w, xq, xd, xc, y, rows, blocks, n, 0, n);
        else if (!_team.TryAcquire()) Q8Shared(w, xq, xd, xc, y, rows, blocks, n, parts);
        else
            try
            {
                var work = _formatWork;
                (work.Kind, work.W, work.Xq, work.Xd, work.Xc, work.Y) = (FormatKind.Q8, (nint)w, (nint)xq, (nint)xd, (nint)xc, (nint)y);
                (work.Rows, work.Blocks, work.N, work.Parts) = (rows, blocks, n, parts);
                _team.Run(work, parts);
            }
            finally
            {
                _team.Release();
            }
    }

    /// <summary>Another thread holds the team: Parallel.For with a closure (in its own method, as
    /// <see cref="SplitProductShared"/>).</summary>
    private void Q8Shared(byte* w, sbyte* xq, float* xd, int* xc, float* y, int rows, int blocks, int n, int parts)
    {
        nint wp = (nint)w, xqp = (nint)xq, xdp = (nint)xd, xcp = (nint)xc, yp = (nint)y;
        RowSplit.For(n, parts, FormatAlign, _threads,
            (j0, j1) => Q8Interleaved.Range((byte*)wp, (sbyte*)xqp, (float*)xdp, (int*)xcp, (float*)yp, rows, blocks, n, j0, j1));
    }

    /// <summary>bf16/fp16 dot products (<see cref="HalfMatMul"/>) on the team, as <see cref="Q8Parts"/>.</summary>
    private void HalfParts(WeightType type, byte* w, float* x, float* y, int rows, int k, int n)
    {
        int parts = FormatPartCount(rows, k, n);
        if (parts == 1) HalfMatMul.Range(type, w, x, y, rows, k, n, 0, n);
        else if (!_team.TryAcquire()) HalfMatMul.Dots(type, w, x, y, rows, k, n, _threads);
        else
            try
            {
                var work = _formatWork;
                (work.Kind, work.Type, work.W, work.X, work.Y) = (FormatKind.Half, type, (nint)w, (nint)x, (nint)y);
                (work.Rows, work.K, work.N, work.Parts) = (rows, k, n, parts);
                _team.Run(work, parts);
            }
            finally
            {
                _team.Release();
            }
    }

    /// <summary>Weight rows per part are a multiple of this: whole pairs of 8-row groups for the Q8_0 kernels,
    /// and no two threads writing one cache line of y.</summary>
    private const int FormatAlign = 16;

    /// <summary>One part for a small product (about 64K multiply-adds), one per thread for a single row
    /// (decode), more for several rows, so that a thread slowed by other work is helped by the rest
    /// (the team hands out parts as threads come for them).</summary>
    private int FormatPartCount(int rows, long k, int n)
    {
        int parts = rows * k * n < 1 << 16 ? 1 : _threads * (rows == 1 ? 1 : 4);
        return Math.Max(1, Math.Min(parts, (n + FormatAlign - 1) / FormatAlign));
    }

    private readonly FormatWork _formatWork = new();

    private enum FormatKind { Q8, Half }

    /// <summary>The arguments of one split product of stored-format weights, reused by every call (see
    /// <see cref="WorkerTeam"/>).</summary>
    private sealed class FormatWork : IPartedWork
    {
        public FormatKind Kind;
        public WeightType Type;
        public nint W, X, Xq, Xd, Xc, Y;
        public int Rows, K, Blocks, N, Parts;

        public void Run(int part)
        {
            int units = (N + FormatAlign - 1) / FormatAlign;
            int u0 = (int)((long)units * part / Parts), u1 = (int)((long)units * (part + 1) / Parts);
            int first = u0 * FormatAlign, end = Math.Min(N, u1 * FormatAlign);
            if (first >= end) return;
            if (Kind == FormatKind.Q8) Q8Interleaved.Range((byte*)W, (sbyte*)Xq, (float*)Xd, (int*)Xc, (float*)Y, Rows, Blocks, N, first, end);
            else HalfMatMul.Range(Type, (byte*)W, (float*)X, (float*)Y, Rows, K, N, first, end);
        }
    }

    /// <summary>fp32 weights through <see cref="Fp32Dots"/> or sgemm; bf16 weights through <see cref="Fp32Dots"/>
    /// (the weight pointer then holds bf16 rows).</summary>
    private enum ProductKind { Fp32Dots, Blas, Bf16Dots }

    /// <summary>Output columns [first, end) of one fp32 product.</summary>
    private static void ProductRange(ProductKind kind, float* x, float* w, float* y, int rows, int k, int n, int first, int end)
    {
        if (kind == ProductKind.Bf16Dots)
        {
            Fp32Dots.Run<Bf16Rows>(x, (byte*)w, y, rows, k, first, end, n);
            return;
        }
        if (kind == ProductKind.Fp32Dots)
        {
            Fp32Dots.Run(x, w, y, rows, k, first, end, n);
            return;
        }
        float* ws = w + (long)first * k, ys = y + first;
        if (rows == 1) OpenBlas.MatVec(ws, x, ys, end - first, k);
        else OpenBlas.MatMulTransposed(x, ws, ys, rows, k, end - first, ldc: n);
    }

    /// <summary>Splits the n output columns into <paramref name="parts"/> ranges aligned to
    /// <paramref name="align"/> (as <see cref="RowSplit"/> does) and runs them on the team: inline for one
    /// part, through Parallel.For when another thread holds the team.</summary>
    private void SplitProduct(ProductKind kind, float* x, float* w, float* y, int rows, int k, int n, int parts, int align)
    {
        parts = Math.Max(1, Math.Min(parts, (n + align - 1) / align));
        if (parts == 1)
        {
            ProductRange(kind, x, w, y, rows, k, n, 0, n);
            return;
        }
        if (!_team.TryAcquire())
        {
            SplitProductShared(kind, x, w, y, rows, k, n, parts, align);
            return;
        }
        try
        {
            var work = _product;
            work.X = x; work.W = w; work.Y = y;
            (work.Kind, work.Rows, work.K, work.N, work.Parts, work.Align) = (kind, rows, k, n, parts, align);
            _team.Run(work, parts);
        }
        finally
        {
            _team.Release();
        }
    }

    /// <summary>Another thread holds the team: Parallel.For with a closure (in its own method, since a
    /// closure's captured arguments are allocated on entry to the method that declares them).</summary>
    private void SplitProductShared(ProductKind kind, float* x, float* w, float* y, int rows, int k, int n, int parts, int align)
    {
        nint xp = (nint)x, wp = (nint)w, yp = (nint)y;
        RowSplit.For(n, parts, align, _threads, (j0, j1) => ProductRange(kind, (float*)xp, (float*)wp, (float*)yp, rows, k, n, j0, j1));
    }

    /// <summary>The arguments of one split product, reused by every call (see <see cref="WorkerTeam"/>).</summary>
    private sealed class ProductWork : IPartedWork
    {
        public ProductKind Kind;
        public float* X, W, Y;
        public int Rows, K, N, Parts, Align;

        public void Run(int part)
        {
            int units = (N + Align - 1) / Align;
            int u0 = (int)((long)units * part / Parts), u1 = (int)((long)units * (part + 1) / Parts);
            int first = u0 * Align, end = Math.Min(N, u1 * Align);
            if (first < end) ProductRange(Kind, X, W, Y, Rows, K, N, first, end);
        }
    }

    /// <summary>From this many activation rows, widening a tile of 16-bit weights for sgemm beats a dot per pair.</summary>
    private const int HalfGemmRows = 4;

    private readonly QuantizedActivations _activations = new();

    public void Rope(Tensor q, Tensor k, ReadOnlySpan<int> positions, int heads, int kvHeads, RopeTable rope)
    {
        fixed (int* pp = positions)
        {
            long values = (long)positions.Length * (heads + kvHeads) * rope.HeadDim;
            if (values < SplitElements || _threads == 1 || !_team.TryAcquire())
            {
                RopeWork.Range(Cpu(q).Pointer, Cpu(k).Pointer, pp, heads, kvHeads, rope, 0, positions.Length);
                return;
            }
            try
            {
                // A prefill's angles (double cos and sin per pair, token and layer) cost more than the rotations.
                var work = _rope;
                work.Q = Cpu(q).Pointer; work.K = Cpu(k).Pointer; work.Positions = pp;
                (work.Heads, work.KvHeads, work.Table, work.Tokens, work.Parts) = (heads, kvHeads, rope, positions.Length, _threads);
                _team.Run(work, _threads);
            }
            finally
            {
                _rope.Table = null;
                _team.Release();
            }
        }
    }

    private readonly RopeWork _rope = new();

    /// <summary>One RoPE call's arguments, reused; part p rotates tokens [Tokens·p/Parts, Tokens·(p+1)/Parts).</summary>
    private sealed class RopeWork : IPartedWork
    {
        public float* Q, K;
        public int* Positions;
        public int Heads, KvHeads, Tokens, Parts;
        public RopeTable? Table;

        public void Run(int part) =>
            Range(Q, K, Positions, Heads, KvHeads, Table!, Tokens * part / Parts, Tokens * (part + 1) / Parts);

        public static void Range(float* q, float* k, int* positions, int heads, int kvHeads, RopeTable rope, int first, int end)
        {
            int hd = rope.HeadDim, half = hd / 2;
            Span<float> cos = stackalloc float[half], sin = stackalloc float[half];
            for (int t = first; t < end; t++)
            {
                rope.Angles(positions[t], cos, sin);
                for (int h = 0; h < heads; h++) Rotate(q + ((long)t * heads + h) * hd, cos, sin, rope.Layout);
                for (int h = 0; h < kvHeads; h++) Rotate(k + ((long)t * kvHeads + h) * hd, cos, sin, rope.Layout);
            }
        }
    }

    /// <summary>
    /// Rotates one head and leaves it in the half-split layout (x[i] paired with x[i + d/2]) whatever
    /// the checkpoint's layout: queries and cached keys then sum their dot products in the same order
    /// for llama2.c and Hugging Face weights, and the KV cache has one layout (Hugging Face's, which
    /// published Q-Filters assume).
    /// </summary>
    private static void Rotate(float* v, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, RopeLayout layout)
    {
        int half = cos.Length;
        if (layout == RopeLayout.Halves)
        {
            int i = 0;
            // 8 pairs at a time: the same two products and one difference (or sum) per value as below.
            if (Vector256.IsHardwareAccelerated)
                fixed (float* c = cos, s = sin)
                    for (; i + 8 <= half; i += 8)
                    {
                        var x0 = Vector256.Load(v + i);
                        var x1 = Vector256.Load(v + i + half);
                        var ci = Vector256.Load(c + i);
                        var si = Vector256.Load(s + i);
                        (x0 * ci - x1 * si).Store(v + i);
                        (x0 * si + x1 * ci).Store(v + i + half);
                    }
            for (; i < half; i++)
            {
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cos[i] - x1 * sin[i];
                v[i + half] = x0 * sin[i] + x1 * cos[i];
            }
            return;
        }
        Span<float> pairs = stackalloc float[2 * half];
        new ReadOnlySpan<float>(v, 2 * half).CopyTo(pairs);
        for (int i = 0; i < half; i++)
        {
            float x0 = pairs[2 * i], x1 = pairs[2 * i + 1];
            v[i] = x0 * cos[i] - x1 * sin[i];
            v[i + half] = x0 * sin[i] + x1 * cos[i];
        }
    }

    public void AppendKv(Tensor k, Tensor v, int rowOffset, ReadOnlySpan<int> positions, KvCacheLayer layer)
    {
        int hd = layer.HeadDim, kvh = layer.KvHeads;
        for (int h = 0; h < kvh; h++)
        {
            if (layer.Lengths[h] + positions.Length > layer.Capacity)
                throw new InvalidOperationException($"KV cache head {h} is full ({layer.Capacity} slots): reserve before appending");
            for (int t = 0; t < positions.Length; t++)
            {
                int slot = layer.Lengths[h] + t;
                long src = ((long)(rowOffset + t) * kvh + h) * hd;
                Cpu(k).Span(src, hd).CopyTo(Cpu(layer.K).Span(layer.Offset(h, slot), hd));
                Cpu(v).Span(src, hd).CopyTo(Cpu(layer.V).Span(layer.Offset(h, slot), hd));
                layer.Positions[h * layer.Capacity + slot] = positions[t];
            }
            layer.Lengths[h] += positions.Length;
        }
    }

    public void CompactKv(KvCacheLayer layer, int head, ReadOnlySpan<int> keep)
    {
        layer.Rewritten();
        int hd = layer.HeadDim, n = layer.Lengths[head];
        float* k = Cpu(layer.K).Pointer + layer.Offset(head, 0), v = Cpu(layer.V).Pointer + layer.Offset(head, 0);
        var positions = layer.Positions.AsSpan(head * layer.Capacity, layer.Capacity);
        for (int i = 0; i < keep.Length; i++)
        {
            int from = keep[i];
            if (from < i || from >= n || (i > 0 && from <= keep[i - 1]))
                throw new ArgumentException($"slots to keep must be ascending and below the head's length {n}", nameof(keep));
            if (from == i) continue;
            // from > i: the destination was already read, so an in-place forward copy is safe.
            new Span<float>(k + (long)from * hd, hd).CopyTo(new Span<float>(k + (long)i * hd, hd));
            new Span<float>(v + (long)from * hd, hd).CopyTo(new Span<float>(v + (long)i * hd, hd));
            positions[i] = positions[from];
        }
        layer.Lengths[head] = keep.Length;
    }

    public void MoveKvSlot(KvCacheLayer layer, int head, int from, int to)
    {
        CheckMove(layer, head, from, to);
        if (from == to) return;
        layer.Rewritten();
        int hd = layer.HeadDim;
        Cpu(layer.K).Span(layer.Offset(head, from), hd).CopyTo(Cpu(layer.K).Span(layer.Offset(head, to), hd));
        Cpu(layer.V).Span(layer.Offset(head, from), hd).CopyTo(Cpu(layer.V).Span(layer.Offset(head, to), hd));
        layer.Positions[head * layer.Capacity + to] = layer.Positions[head * layer.Capacity + from];
    }

    /// <summary>Both slots must be filled ones of an existing head (shared with the ILGPU backend).</summary>
    internal static void CheckMove(KvCacheLayer layer, int head, int from, int to)
    {
        if ((uint)head >= layer.KvHeads) throw new ArgumentOutOfRangeException(nameof(head));
        int n = layer.Lengths[head];
        if ((uint)from >= n || (uint)to >= n) throw new ArgumentException($"slots {from} and {to} must both be below the head's length {n}");
    }

    public void RotateKeys(KvCacheLayer layer, int head, ReadOnlySpan<int> deltas, RopeTable rope)
    {
        layer.Rewritten();
        int hd = layer.HeadDim, half = hd / 2;
        float* k = Cpu(layer.K).Pointer + layer.Offset(head, 0);
        // Angles and products in double: a key in StreamingLLM's window is re-rotated once per step,
        // so the rounding of each rotation should be only that of the stored float.
        Span<double> cos = stackalloc double[half], sin = stackalloc double[half];
        int angleOf = 0;
        for (int i = 0; i < deltas.Length; i++)
        {
            int d = deltas[i];
            if (d == 0) continue;
            if (d != angleOf)
            {
                for (int j = 0; j < half; j++)
                {
                    var a = d * rope.InverseFrequencies[j];
                    cos[j] = Math.Cos(a);
                    sin[j] = Math.Sin(a);
                }
                angleOf = d;
            }
            float* x = k + (long)i * hd;
            for (int j = 0; j < half; j++)
            {
                double x0 = x[j], x1 = x[j + half];
                x[j] = (float)(x0 * cos[j] - x1 * sin[j]);
                x[j + half] = (float)(x0 * sin[j] + x1 * cos[j]);
            }
        }
    }

    public void Attention(Tensor q, Tensor output, ReadOnlySpan<AttentionSegment> segments, int heads, int headDim)
    {
        // One work item per (segment, token, head), so a batch of short sequences splits across cores
        // as well as one long prefill does. The arguments live in a reused object, so that a decode
        // step allocates nothing here.
        bool shared = _team.TryAcquire();
        var a = shared ? _attention : new AttentionWork();
        try
        {
            if (a.Starts.Length < segments.Length)
            {
                a.Starts = new int[Math.Max(segments.Length, 2 * a.Starts.Length)];
                a.Segments = new AttentionSegment[a.Starts.Length];
            }
            long work = 0;
            int count = 0, maxLen = 1;
            for (int i = 0; i < segments.Length; i++)
            {
                a.Starts[i] = count;
                a.Segments[i] = segments[i];
                count += segments[i].Tokens * heads;
                var lengths = segments[i].Cache.Lengths;
                for (int h = 0; h < lengths.Length; h++) maxLen = Math.Max(maxLen, lengths[h]);
                work += (long)segments[i].Tokens * heads * lengths[0] * headDim;
            }
            a.Q = Cpu(q).Pointer;
            a.Output = Cpu(output).Pointer;
            (a.SegmentCount, a.Heads, a.HeadDim, a.Scale, a.Count, a.MaxLength) =
                (segments.Length, heads, headDim, 1f / MathF.Sqrt(headDim), count, maxLen);
            if (work < 1 << 16 || _threads == 1)
            {
                a.Parts = 1;
                a.Run(0);
            }
            else if (shared)
            {
                // A few parts per thread, claimed as threads free up: sequences differ in length.
                a.Parts = Math.Min(count, 4 * _threads);
                _team.Run(a, a.Parts);
            }
            else
            {
                a.Parts = Math.Min(count, 4 * _threads);
                Parallel.For(0, a.Parts, new ParallelOptions { MaxDegreeOfParallelism = _threads }, a.Run);
            }
        }
        finally
        {
            Array.Clear(a.Segments, 0, segments.Length); // do not keep caches alive
            if (shared) _team.Release();
        }
    }

    /// <summary>One attention call's arguments; part p runs items [count·p/parts, count·(p+1)/parts).</summary>
    private sealed class AttentionWork : IPartedWork
    {
        public int[] Starts = new int[16];
        public AttentionSegment[] Segments = new AttentionSegment[16];
        public float* Q, Output;
        public int SegmentCount, Heads, HeadDim, Count, MaxLength, Parts;
        public float Scale;

        public void Run(int part)
        {
            int first = (int)((long)Count * part / Parts), end = (int)((long)Count * (part + 1) / Parts);
            if (first >= end) return;
            var scores = AttentionScratch(MaxLength);
            for (int i = first; i < end; i++) One(i, scores);
        }

        private void One(int index, float[] scores)
        {
            int heads = Heads, headDim = HeadDim;
            int si = Array.BinarySearch(Starts, 0, SegmentCount, index);
            if (si < 0) si = ~si - 1;
            while (si + 1 < SegmentCount && Starts[si + 1] == index) si++; // skip empty segments
            var seg = Segments[si];
            var cache = seg.Cache;
            int local = index - Starts[si], t = local / heads, h = local % heads, g = h / (heads / cache.KvHeads);
            int row = seg.RowOffset + t;
            // Causal: the segment's tokens are the last `Tokens` slots of the head; token t sees up to its own.
            int visible = cache.Lengths[g] - seg.Tokens + t + 1;
            float* qp = Q + ((long)row * heads + h) * headDim;
            var qv = new ReadOnlySpan<float>(qp, headDim);
            var s = scores.AsSpan(0, visible);
            float* keys = Cpu(cache.K).Pointer + cache.Offset(g, 0), values = Cpu(cache.V).Pointer + cache.Offset(g, 0);
            var o = new Span<float>(Output + ((long)row * heads + h) * headDim, headDim);
            if (Vector8Heads && headDim % 8 == 0)
            {
                fixed (float* sp = scores)
                {
                    Scores8(qp, keys, sp, visible, headDim, Scale);
                    TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
                    TensorPrimitives.SoftMax(s, s);
                    Weighted8(sp, values, Output + ((long)row * heads + h) * headDim, visible, headDim);
                }
                return;
            }
            for (int j = 0; j < visible; j++) s[j] = TensorPrimitives.Dot(qv, new ReadOnlySpan<float>(keys + (long)j * headDim, headDim)) * Scale;
            // TensorPrimitives.SoftMax exponentiates without subtracting the maximum, so scores past ~88
            // (a cache run far beyond the training context) overflow to inf/inf = NaN: shift them first.
            TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
            TensorPrimitives.SoftMax(s, s);
            o.Clear();
            for (int j = 0; j < visible; j++) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(values + (long)j * headDim, headDim), s[j], o, o);
        }
    }

    /// <summary>Attention's dot products and weighted sums in 8-lane fused multiply-adds, inline (a
    /// TensorPrimitives call per cached key and per value row cost more than the arithmetic at head
    /// sizes of 64). Each score and each output lane is one chain in a fixed order, the same for a
    /// sequence alone or in any batch.</summary>
    private static readonly bool Vector8Heads = System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated
        && Environment.GetEnvironmentVariable("LLMCLUSTER_VECTOR_ATTENTION") != "0";

    /// <summary>s[j] = (q · k_j) · scale for j &lt; n; keys are rows of <paramref name="hd"/> floats.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void Scores8(float* q, float* keys, float* s, int n, int hd, float scale)
    {
        int j = 0;
        // Four keys at a time: four independent chains in flight.
        for (; j + 4 <= n; j += 4)
        {
            float* k0 = keys + (long)j * hd, k1 = k0 + hd, k2 = k1 + hd, k3 = k2 + hd;
            var qc = System.Runtime.Intrinsics.Vector256.Load(q);
            var a0 = qc * System.Runtime.Intrinsics.Vector256.Load(k0);
            var a1 = qc * System.Runtime.Intrinsics.Vector256.Load(k1);
            var a2 = qc * System.Runtime.Intrinsics.Vector256.Load(k2);
            var a3 = qc * System.Runtime.Intrinsics.Vector256.Load(k3);
            for (int d = 8; d < hd; d += 8)
            {
                qc = System.Runtime.Intrinsics.Vector256.Load(q + d);
                a0 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(qc, System.Runtime.Intrinsics.Vector256.Load(k0 + d), a0);
                a1 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(qc, System.Runtime.Intrinsics.Vector256.Load(k1 + d), a1);
                a2 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(qc, System.Runtime.Intrinsics.Vector256.Load(k2 + d), a2);
                a3 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(qc, System.Runtime.Intrinsics.Vector256.Load(k3 + d), a3);
            }
            s[j] = System.Runtime.Intrinsics.Vector256.Sum(a0) * scale;
            s[j + 1] = System.Runtime.Intrinsics.Vector256.Sum(a1) * scale;
            s[j + 2] = System.Runtime.Intrinsics.Vector256.Sum(a2) * scale;
            s[j + 3] = System.Runtime.Intrinsics.Vector256.Sum(a3) * scale;
        }
        for (; j < n; j++)
        {
            float* k0 = keys + (long)j * hd;
            var a0 = System.Runtime.Intrinsics.Vector256.Load(q) * System.Runtime.Intrinsics.Vector256.Load(k0);
            for (int d = 8; d < hd; d += 8)
                a0 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(System.Runtime.Intrinsics.Vector256.Load(q + d), System.Runtime.Intrinsics.Vector256.Load(k0 + d), a0);
            s[j] = System.Runtime.Intrinsics.Vector256.Sum(a0) * scale;
        }
    }

    /// <summary>o = Σ_j s[j] · v_j over j &lt; n, in j order per lane; value rows of <paramref name="hd"/> floats.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void Weighted8(float* s, float* values, float* o, int n, int hd)
    {
        int d = 0;
        // Four lanes of eight at a time: four chains in flight, each value row read once per group.
        for (; d + 32 <= hd; d += 32)
        {
            var a0 = System.Runtime.Intrinsics.Vector256<float>.Zero;
            var a1 = a0;
            var a2 = a0;
            var a3 = a0;
            for (int j = 0; j < n; j++)
            {
                float* v = values + (long)j * hd + d;
                var w = System.Runtime.Intrinsics.Vector256.Create(s[j]);
                a0 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(w, System.Runtime.Intrinsics.Vector256.Load(v), a0);
                a1 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(w, System.Runtime.Intrinsics.Vector256.Load(v + 8), a1);
                a2 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(w, System.Runtime.Intrinsics.Vector256.Load(v + 16), a2);
                a3 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(w, System.Runtime.Intrinsics.Vector256.Load(v + 24), a3);
            }
            a0.Store(o + d);
            a1.Store(o + d + 8);
            a2.Store(o + d + 16);
            a3.Store(o + d + 24);
        }
        for (; d < hd; d += 8)
        {
            var a0 = System.Runtime.Intrinsics.Vector256<float>.Zero;
            for (int j = 0; j < n; j++)
                a0 = System.Runtime.Intrinsics.Vector256.FusedMultiplyAdd(System.Runtime.Intrinsics.Vector256.Create(s[j]), System.Runtime.Intrinsics.Vector256.Load(values + (long)j * hd + d), a0);
            a0.Store(o + d);
        }
    }

    // Score rows reused per thread: the decode loop should not allocate per step.
    [ThreadStatic] private static float[]? _attentionScratch;

    private static float[] AttentionScratch(int length) =>
        _attentionScratch is { } s && s.Length >= length ? s : _attentionScratch = new float[Math.Max(length, 256) * 2];

    private static CpuTensor Cpu(Tensor t) => t as CpuTensor ?? throw new ArgumentException("tensor belongs to another backend");

    public void Dispose()
    {
        _activations.Dispose();
        _team.Dispose();
    }
}
