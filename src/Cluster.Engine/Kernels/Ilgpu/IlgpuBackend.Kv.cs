using ILGPU;
using ILGPU.Runtime;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>RoPE, the KV cache and attention on the device. A cache layer's K and V are device
/// tensors; its positions and per-head lengths are host arrays that only the host changes, so a
/// kernel needs them only as arguments (one number when every head has the same length, the usual
/// case, else a small upload).</summary>
public sealed partial class IlgpuBackend
{
    private DeviceScratch<float> _cos = null!, _sin = null!, _copy = null!, _scores = null!, _gatherK = null!, _gatherV = null!, _expandK = null!, _expandV = null!;
    private DeviceScratch<double> _cosD = null!, _sinD = null!;
    private DeviceScratch<int> _lengths = null!, _keep = null!;
    private int[] _ropePositions = [];
    private RopeTable? _ropeTable;

    private void InitKvScratch()
    {
        (_cos, _sin, _copy, _scores, _gatherK, _gatherV) = (new(_accelerator), new(_accelerator), new(_accelerator), new(_accelerator), new(_accelerator), new(_accelerator));
        (_expandK, _expandV) = (new(_accelerator), new(_accelerator));
        (_cosD, _sinD, _lengths, _keep) = (new(_accelerator), new(_accelerator), new(_accelerator), new(_accelerator));
    }

    private void DisposeKvScratch()
    {
        foreach (var s in new IDisposable[] { _cos, _sin, _copy, _scores, _gatherK, _gatherV, _expandK, _expandV, _cosD, _sinD, _lengths, _keep }) s.Dispose();
    }

    public void Rope(Tensor q, Tensor k, ReadOnlySpan<int> positions, int heads, int kvHeads, RopeTable rope)
    {
        using var scope = Enter("rope");
        int T = positions.Length, half = rope.HeadDim / 2;
        if (T == 0) return;
        // Every layer of a forward pass rotates by the same positions: upload the angles once per pass.
        if (!ReferenceEquals(rope, _ropeTable) || !positions.SequenceEqual(_ropePositions))
        {
            var cos = new float[T * half];
            var sin = new float[T * half];
            for (int t = 0; t < T; t++) rope.Angles(positions[t], cos.AsSpan(t * half, half), sin.AsSpan(t * half, half));
            _cos.Upload(cos);
            _sin.Upload(sin);
            (_ropeTable, _ropePositions) = (rope, positions.ToArray());
        }
        RotateHeads(Dev(q).F32, T * heads, heads, half, rope.Layout);
        RotateHeads(Dev(k).F32, T * kvHeads, kvHeads, half, rope.Layout);
    }

    private void RotateHeads(ArrayView<float> v, int rows, int heads, int half, RopeLayout layout)
    {
        var live = v.SubView(0, (long)rows * 2 * half);
        var cos = _cos.Get(Math.Max(1, _ropePositions.Length * half));
        var sin = _sin.Get(Math.Max(1, _ropePositions.Length * half));
        if (layout == RopeLayout.Halves)
        {
            _k.Rope(rows * half, live, live, cos, sin, heads, half, 0);
            return;
        }
        // Interleaved pairs are read from a copy: the kernel writes them back half-split.
        var src = _copy.Get(live.Length);
        live.CopyTo(src);
        _k.Rope(rows * half, src, live, cos, sin, heads, half, 1);
    }

    public void AppendKv(Tensor k, Tensor v, int rowOffset, ReadOnlySpan<int> positions, KvCacheLayer layer)
    {
        using var scope = Enter("append kv");
        int hd = layer.HeadDim, kvh = layer.KvHeads, T = positions.Length;
        for (int h = 0; h < kvh; h++)
            if (layer.Lengths[h] + T > layer.Capacity)
                throw new InvalidOperationException($"KV cache head {h} is full ({layer.Capacity} slots): reserve before appending");
        if (T > 0)
        {
            int uniform = UniformLength(layer.Lengths);
            var starts = uniform >= 0 ? _lengths.Get(1) : _lengths.Upload(layer.Lengths);
            _k.AppendKv(T * kvh * hd, Dev(k).F32, Dev(v).F32, Dev(layer.K).F32, Dev(layer.V).F32, starts,
                new KvAppendShape(kvh, hd, layer.Capacity, rowOffset, uniform));
        }
        for (int h = 0; h < kvh; h++)
        {
            for (int t = 0; t < T; t++) layer.Positions[h * layer.Capacity + layer.Lengths[h] + t] = positions[t];
            layer.Lengths[h] += T;
        }
    }

    public void CompactKv(KvCacheLayer layer, int head, ReadOnlySpan<int> keep)
    {
        layer.Rewritten();
        using var scope = Enter("compact kv");
        int hd = layer.HeadDim, n = layer.Lengths[head];
        bool moves = false;
        for (int i = 0; i < keep.Length; i++)
        {
            int from = keep[i];
            if (from < i || from >= n || (i > 0 && from <= keep[i - 1]))
                throw new ArgumentException($"slots to keep must be ascending and below the head's length {n}", nameof(keep));
            moves |= from != i;
        }
        if (moves)
        {
            long count = (long)keep.Length * hd, head0 = layer.Offset(head, 0);
            ArrayView<float> gk = _gatherK.Get(count), gv = _gatherV.Get(count), ck = Dev(layer.K).F32, cv = Dev(layer.V).F32;
            _k.Gather((int)count, ck, cv, gk, gv, _keep.Upload(keep), head0, hd);
            gk.CopyTo(ck.SubView(head0, count));
            gv.CopyTo(cv.SubView(head0, count));
            var positions = layer.Positions.AsSpan(head * layer.Capacity, layer.Capacity);
            for (int i = 0; i < keep.Length; i++) positions[i] = positions[keep[i]];
        }
        layer.Lengths[head] = keep.Length;
    }

    public void MoveKvSlot(KvCacheLayer layer, int head, int from, int to)
    {
        using var scope = Enter("move kv slot");
        CpuBackend.CheckMove(layer, head, from, to);
        if (from == to) return;
        layer.Rewritten();
        int hd = layer.HeadDim;
        // Two device-to-device row copies: no kernel launch and nothing through the host.
        ArrayView<float> k = Dev(layer.K).F32, v = Dev(layer.V).F32;
        k.SubView(layer.Offset(head, from), hd).CopyTo(k.SubView(layer.Offset(head, to), hd));
        v.SubView(layer.Offset(head, from), hd).CopyTo(v.SubView(layer.Offset(head, to), hd));
        layer.Positions[head * layer.Capacity + to] = layer.Positions[head * layer.Capacity + from];
    }

    public void RotateKeys(KvCacheLayer layer, int head, ReadOnlySpan<int> deltas, RopeTable rope)
    {
        layer.Rewritten();
        using var scope = Enter("rotate keys");
        int half = layer.HeadDim / 2, n = deltas.Length;
        bool any = false;
        foreach (var d in deltas) any |= d != 0;
        if (!any) return;
        // Angles in double on the host, as CpuBackend computes them; a zero delta rotates by (1, 0), exactly.
        var cos = new double[n * half];
        var sin = new double[n * half];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < half; j++)
            {
                var a = deltas[i] * rope.InverseFrequencies[j];
                (cos[i * half + j], sin[i * half + j]) = deltas[i] == 0 ? (1.0, 0.0) : (Math.Cos(a), Math.Sin(a));
            }
        _k.RotateKeys(n * half, Dev(layer.K).F32, layer.Offset(head, 0), _cosD.Upload(cos), _sinD.Upload(sin), half);
    }

    public void Attention(Tensor q, Tensor output, ReadOnlySpan<AttentionSegment> segments, int heads, int headDim)
    {
        using var scope = Enter("attention");
        float scale = 1f / MathF.Sqrt(headDim);
        ArrayView<float> qv = Dev(q).F32, ov = Dev(output).F32;
        foreach (var seg in segments)
        {
            if (seg.Tokens == 0) continue;
            var cache = seg.Cache;
            int uniform = UniformLength(cache.Lengths), stride = cache.Lengths.Max();
            var lengths = uniform >= 0 ? _lengths.Get(1) : _lengths.Upload(cache.Lengths);
            var s = new AttentionShape(heads, headDim, heads / cache.KvHeads, seg.Tokens, seg.RowOffset, cache.Capacity, stride, uniform, scale);
            int rows = seg.Tokens * heads;
            if (_cublas is not null && CublasAttention && seg.Tokens >= CublasAttentionMinTokens)
            {
                CublasAttentionSegment(qv, ov, Dev(cache.K), Dev(cache.V), lengths, s);
                continue;
            }
            var scores = _scores.Get((long)rows * stride);
            if (GroupedKernels && _attentionGroup >= headDim)
            {
                // Decode steps and short chunks: one launch, one group per (token, head) row.
                _k.FusedAttention(new KernelConfig(rows, _attentionGroup, SharedMemoryConfig.RequestDynamic<float>(_attentionGroup)),
                    qv, Dev(cache.K).F32, Dev(cache.V).F32, lengths, scores, ov, s);
                continue;
            }
            _k.Scores(checked(rows * stride), qv, Dev(cache.K).F32, lengths, scores, s);
            if (GroupedKernels) _k.Softmax(new KernelConfig(rows, _reduce, SharedMemoryConfig.RequestDynamic<float>(_reduce)), lengths, scores, s);
            else _k.SoftmaxRow(rows, lengths, scores, s);
            _k.Output(rows * headDim, scores, Dev(cache.V).F32, lengths, ov, s);
        }
    }

    /// <summary>Whether a prefill chunk's attention products go to cuBLAS (CUDA with cuBLAS only; on by
    /// default, LLMCLUSTER_CUBLAS_ATTENTION=0 turns it off). Decode steps keep the kernels: one query
    /// row is too little work for 2 x kvHeads library calls.</summary>
    public bool CublasAttention { get; set; } = Environment.GetEnvironmentVariable("LLMCLUSTER_CUBLAS_ATTENTION") != "0";

    /// <summary>Fewest tokens in a segment for the cuBLAS attention path.</summary>
    public const int CublasAttentionMinTokens = 16;

    /// <summary>Query rows per block of the cuBLAS attention path (LLMCLUSTER_ATTENTION_QUERY_BLOCK
    /// overrides it, so the GPU check can exercise the blocking on a short prompt). Under the causal
    /// mask, block i of queries sees only the keys up to its last row, so blocking skips most of the
    /// masked upper triangle and bounds the scores scratch to [block, heads, visible].</summary>
    public int CublasAttentionQueryBlock { get; set; } =
        int.TryParse(Environment.GetEnvironmentVariable("LLMCLUSTER_ATTENTION_QUERY_BLOCK"), out var b) && b > 0 ? b : 512;

    /// <summary>
    /// One segment's attention as two strided-batched products per block of query rows, batched over
    /// every query head: scores = q·k^T scaled in the product, the kernels' softmax (which zeroes
    /// columns past each row's causal limit), then output = p·V. Each query head first gets its own
    /// copy of its group's K and V ([heads, Stride, hd], zero past a head's length): a few MB that buy
    /// one library call per product instead of one per KV head, whose batch of group-size heads left
    /// most of the GPU idle. Row-major X[r, c] is column-major X^T, so scores^T [L, T] = K [L, hd] · q^T
    /// and output^T [hd, T] = V^T · p^T, both with no copies. When the model's products are bf16 the
    /// attention products use TF32 tensor cores; an all-fp32 model keeps exact fp32.
    /// </summary>
    private void CublasAttentionSegment(ArrayView<float> q, ArrayView<float> o, IlgpuTensor k, IlgpuTensor v,
        ArrayView<int> lengths, AttentionShape whole)
    {
        long expanded = (long)whole.Heads * whole.Stride * whole.HeadDim;
        ArrayView<float> kx = _expandK.Get(expanded), vx = _expandV.Get(expanded);
        using (Profile("attention expand kv"))
            _k.ExpandKv(checked((int)expanded), k.F32, v.F32, lengths, kx, vx, whole);
        // Blocks need one visible length per row for every head: with uneven heads (after a policy's
        // per-head eviction) the whole segment is one block.
        int block = whole.UniformLength >= 0 ? CublasAttentionQueryBlock : whole.Tokens;
        for (int t0 = 0; t0 < whole.Tokens; t0 += block)
        {
            int rowsInBlock = Math.Min(block, whole.Tokens - t0);
            var s = whole;
            if (whole.UniformLength >= 0)
            {
                // The block's last row sees `visible` keys: shape it as a segment of its own whose cache ends there.
                int visible = whole.UniformLength - (whole.Tokens - t0 - rowsInBlock);
                s = whole with { Tokens = rowsInBlock, RowOffset = whole.RowOffset + t0, Stride = visible, UniformLength = visible };
            }
            CublasAttentionBlock(q, o, kx, vx, (long)whole.Stride * whole.HeadDim, lengths, s);
        }
    }

    /// <param name="kx">Per-query-head keys [heads, headStride / HeadDim, HeadDim]; <paramref name="vx"/> the same for values.</param>
    private void CublasAttentionBlock(ArrayView<float> q, ArrayView<float> o, ArrayView<float> kx, ArrayView<float> vx, long headStride,
        ArrayView<int> lengths, AttentionShape s)
    {
        int T = s.Tokens, hd = s.HeadDim, L = s.Stride, heads = s.Heads;
        int rows = T * heads;
        var scores = _scores.Get((long)rows * L);
        int qRow = heads * hd;                            // floats between one token's queries and the next's
        int sRow = heads * L;                             // floats between one token's score rows
        nint qBase = q.SubView((long)s.RowOffset * qRow).LoadEffectiveAddressAsPtr();
        nint oBase = o.SubView((long)s.RowOffset * qRow).LoadEffectiveAddressAsPtr();
        nint sBase = scores.LoadEffectiveAddressAsPtr();
        nint kBase = kx.LoadEffectiveAddressAsPtr(), vBase = vx.LoadEffectiveAddressAsPtr();
        bool tf32 = _reducedPrecisionProducts;
        // scores_h^T [L, T] = scale · K_h [L, hd] (column-major [hd, L], transposed) · q_h^T [hd, T] (ld = heads*hd).
        using (Profile("attention q·k (cublas)"))
            _cublas!.GemmStridedBatched(true, false, L, T, hd, kBase, hd, headStride, qBase, qRow, hd, sBase, sRow, L, heads,
                alpha: s.Scale, tf32: tf32);
        using (Profile("attention softmax"))
        {
            if (GroupedKernels) _k.Softmax(new KernelConfig(rows, _reduce, SharedMemoryConfig.RequestDynamic<float>(_reduce)), lengths, scores, s);
            else _k.SoftmaxRow(rows, lengths, scores, s);
        }
        // output_h^T [hd, T] = V_h^T [hd, L] (column-major view of row-major V, ld hd) · p_h^T [L, T] (ld = heads*L).
        using (Profile("attention p·v (cublas)"))
            _cublas!.GemmStridedBatched(false, false, hd, T, L, vBase, hd, headStride, sBase, sRow, L, oBase, qRow, hd, heads, tf32: tf32);
    }

    /// <summary>The common length of every head, or -1 when they differ.</summary>
    private static int UniformLength(int[] lengths)
    {
        foreach (var l in lengths) if (l != lengths[0]) return -1;
        return lengths[0];
    }
}
