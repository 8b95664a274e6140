using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;

namespace Cluster.Engine.Model;

/// <summary>
/// A Llama-family decoder on one backend: RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or
/// untied classifier (Touvron et al. 2023). <see cref="Forward"/> runs a chunk of tokens of one
/// sequence against its KV cache: several tokens (prefill) use matrix-matrix products, one token
/// (decode) matrix-vector products. Not thread-safe: one forward at a time per model.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    private readonly RunState _state;
    private readonly IDisposable? _weightOwner;

    /// <param name="weightOwner">Keeps memory-mapped checkpoint files open while weights point into them.</param>
    public LlamaModel(LlamaConfig config, LlamaWeights weights, IComputeBackend backend, IDisposable? weightOwner = null, int maxChunk = 256)
    {
        Config = config;
        Weights = weights;
        Backend = backend;
        _weightOwner = weightOwner;
        Rope = new RopeTable(config.HeadDim, config.RopeTheta, config.RopeLayout, config.RopeScaling);
        MaxChunk = maxChunk;
        _state = new RunState(config, backend, maxChunk);
        ExactRows = Math.Min(maxChunk, weights.Layers.SelectMany(l => new[] { l.Wq, l.Wk, l.Wv, l.Wo, l.Gate, l.Up, l.Down }).Append(weights.Classifier)
            .Select(w => w.Format).Distinct().Min(backend.RowExactRows));
    }

    /// <summary>Rows a pass may hold while every row's logits stay bit for bit what the row gives alone
    /// (<see cref="IComputeBackend.RowExactRows"/> over this model's weight formats): a batch this size or
    /// smaller may run several tokens of one sequence in a segment instead of one per pass, exactly.</summary>
    public int ExactRows { get; }

    public LlamaConfig Config { get; }
    public LlamaWeights Weights { get; }
    public IComputeBackend Backend { get; }
    public RopeTable Rope { get; }

    /// <summary>Most tokens one pass of the layers takes; longer inputs are run chunk by chunk.</summary>
    public int MaxChunk { get; }

    /// <summary>Called after RoPE in every layer with the chunk's queries [T, heads*headDim] and their
    /// original positions (Q-Filters calibration samples them); null for none.</summary>
    public QueryTap? QueryTap { get; set; }

    /// <summary>Called in every layer once its attention has run, with the layer's index: the pass no
    /// longer reads that layer's cache, so after the last chunk of a prefill its KV is final (a prefill
    /// worker compresses and sends it while the later layers run); null for none.</summary>
    public Action<int>? LayerDone { get; set; }

    /// <summary>A KV cache for one sequence, with room for <paramref name="capacity"/> tokens (it grows if
    /// needed), managed by <paramref name="policy"/>, dense when none is given (a bounded policy never
    /// grows it past its budget).</summary>
    public SequenceKvCache CreateCache(int capacity = 256, KvCompressionPolicy? policy = null)
    {
        policy ??= DensePolicy.Default;
        return new(Backend, Config.Layers, Config.KvHeads, Config.HeadDim, policy.Budget is int b ? Math.Min(capacity, b) : capacity, policy);
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions cache.TokensSeen.. and appends their K/V to the cache,
    /// in chunks of at most <see cref="MaxChunk"/>, the shorter one first (<see cref="FirstChunk"/>), so
    /// that the last chunk is a whole one: a prefill worker streams each layer's KV while the last chunk
    /// runs, and a last chunk of a few tokens left it almost no time to. The cache must have room for all of them
    /// (<see cref="KvRoom"/> makes it; <see cref="KvRoom.Forward"/> makes it and runs). Writes the logits
    /// of the last token ([vocab]) or, with <paramref name="allLogits"/>, of every token ([T, vocab]) to
    /// <paramref name="logits"/>; an empty <paramref name="logits"/> skips the classifier (a chunk whose
    /// logits nobody reads).
    /// </summary>
    /// <exception cref="InvalidOperationException">The cache has no room for the tokens.</exception>
    public void Forward(ReadOnlySpan<int> tokens, SequenceKvCache cache, Span<float> logits, bool allLogits = false)
    {
        if (tokens.IsEmpty) throw new ArgumentException("no tokens to run", nameof(tokens));
        var vocab = Config.VocabSize;
        var needed = allLogits ? (long)tokens.Length * vocab : logits.IsEmpty ? 0 : vocab;
        if (logits.Length < needed) throw new ArgumentException($"logits buffer holds {logits.Length} floats, needs {needed}", nameof(logits));
        CheckRoom(cache, tokens.Length);
        var caches = _state.OneCache;
        var lengths = _state.OneLength;
        caches[0] = cache;
        try
        {
            for (int start = 0, length = FirstChunk(tokens.Length); start < tokens.Length; start += length, length = MaxChunk)
            {
                var chunk = tokens.Slice(start, length);
                bool last = start + chunk.Length == tokens.Length;
                lengths[0] = chunk.Length;
                if (allLogits) RunSegments(chunk, caches, lengths, logits.Slice(start * vocab, chunk.Length * vocab), allRows: true);
                else RunSegments(chunk, caches, lengths, last ? logits[..(int)needed] : [], allRows: false);
            }
        }
        finally
        {
            caches[0] = null!; // the run state does not keep a sequence's cache alive
        }
    }

    /// <summary>Tokens in the first chunk of a <see cref="Forward"/> of <paramref name="tokens"/>: the
    /// remainder after whole chunks (or a whole chunk when there is none); every later chunk is whole.</summary>
    private int FirstChunk(int tokens) => tokens % MaxChunk is var r && r > 0 ? r : Math.Min(tokens, MaxChunk);

    /// <summary>
    /// One decode step for a batch: token i continues the sequence of <paramref name="caches"/>[i],
    /// and its logits go to row i of <paramref name="logits"/> [B, vocab]. The matrix products run once
    /// for the whole batch, so weights are read from memory once per step instead of once per
    /// sequence; attention runs per sequence over its own cache (continuous batching, Yu et al. 2022).
    /// Every cache must have room for its token (<see cref="KvRoom.Make"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">A cache has no room for its token.</exception>
    public void ForwardBatch(ReadOnlySpan<int> tokens, IReadOnlyList<SequenceKvCache> caches, Span<float> logits)
    {
        int batch = tokens.Length;
        if (batch == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        if (caches.Count != batch) throw new ArgumentException($"{batch} tokens but {caches.Count} caches", nameof(caches));
        if (batch > MaxChunk) throw new ArgumentException($"a batch of {batch} exceeds the model's {MaxChunk} rows per pass", nameof(tokens));
        ForwardSegments(tokens, caches, _state.Ones.AsSpan(0, batch), logits);
    }

    /// <summary>
    /// One pass over consecutive segments of <paramref name="tokens"/>: segment i is the next
    /// <paramref name="lengths"/>[i] tokens of the sequence of <paramref name="caches"/>[i] (one for a
    /// decoding sequence, several for one catching up), and row r of <paramref name="logits"/> [T, vocab]
    /// gets token r's logits. vLLM's step has no prefill or decode phase, only tokens being computed; so
    /// does this one. Every cache must have room for its segment (<see cref="KvRoom.Make"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">A cache has no room for its segment.</exception>
    public void ForwardSegments(ReadOnlySpan<int> tokens, IReadOnlyList<SequenceKvCache> caches, ReadOnlySpan<int> lengths, Span<float> logits)
    {
        int rows = tokens.Length;
        if (rows == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        if (caches.Count != lengths.Length) throw new ArgumentException($"{lengths.Length} segment lengths but {caches.Count} caches", nameof(caches));
        if (rows > MaxChunk) throw new ArgumentException($"a pass of {rows} tokens exceeds the model's {MaxChunk} rows per pass", nameof(tokens));
        int sum = 0;
        foreach (int n in lengths)
        {
            if (n < 1) throw new ArgumentException($"a segment has {n} tokens", nameof(lengths));
            sum += n;
        }
        if (sum != rows) throw new ArgumentException($"segments of {sum} tokens in all but {rows} tokens", nameof(lengths));
        if (logits.Length < (long)rows * Config.VocabSize) throw new ArgumentException($"logits buffer holds {logits.Length} floats, needs {(long)rows * Config.VocabSize}", nameof(logits));
        for (int i = 1; i < caches.Count; i++)
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(caches[i], caches[j])) throw new ArgumentException("a sequence appears twice in one batch", nameof(caches));
        for (int i = 0; i < caches.Count; i++) CheckRoom(caches[i], lengths[i]);
        var segmentLengths = _state.Lengths;
        lengths.CopyTo(segmentLengths);
        RunSegments(tokens, caches, segmentLengths, logits[..(rows * Config.VocabSize)], allRows: true);
    }

    /// <summary>The model never makes room itself (that is the KV layer's call, with the policy): a
    /// caller that forgot would write past the cache's slots, its budget or, dense, the context.</summary>
    private void CheckRoom(SequenceKvCache cache, int incoming)
    {
        if (!cache.HasRoom(incoming))
            throw new InvalidOperationException(
                $"the KV cache has no room for {incoming} more tokens ({cache.Length} of {cache.Capacity} slots, policy {cache.Policy.Name}); " +
                "make room with KvRoom.Make (or run through KvRoom.Forward) before the model");
        if (ContextLimit.Refusal(cache.Policy, cache.TokensSeen, incoming, Config.MaxPositions) is { } why)
            throw new ContextExceededException(why);
    }

    /// <summary>
    /// Runs the layers over consecutive segments of <paramref name="tokens"/>: segment i has
    /// <paramref name="lengths"/>[i] tokens of the sequence of <paramref name="caches"/>[i]. A prefill
    /// chunk is one segment; a decode batch is one single-token segment per sequence. Writes the
    /// logits of every row (<paramref name="allRows"/>) or of the last row only.
    /// </summary>
    private void RunSegments(ReadOnlySpan<int> tokens, IReadOnlyList<SequenceKvCache> caches, int[] lengths, Span<float> logits, bool allRows)
    {
        var c = Config;
        var b = Backend;
        var s = _state;
        int T = tokens.Length;
        // Original positions are recorded in the cache; RoPE uses them too, except under a policy that
        // assigns positions inside the cache (StreamingLLM), where the new tokens follow the cached ones.
        Span<int> positions = stackalloc int[T], ropePositions = stackalloc int[T];
        Span<int> rowOffsets = stackalloc int[caches.Count];
        for (int i = 0, row = 0; i < caches.Count; row += lengths[i], i++)
        {
            var cache = caches[i];
            rowOffsets[i] = row;
            int ropeStart = cache.Policy.QueryPosition(cache);
            for (int t = 0; t < lengths[i]; t++)
            {
                positions[row + t] = cache.TokensSeen + t;
                ropePositions[row + t] = ropeStart + t;
            }
        }
        var segments = _state.Segments.AsSpan(0, caches.Count);

        b.Embed(Weights.TokenEmbedding, tokens, c.Dim, s.X);                       // x [T, dim]
        for (int l = 0; l < c.Layers; l++)
        {
            var w = Weights.Layers[l];
            // Attention block: x += Wo · attention(RoPE(Wq·n), RoPE(Wk·n), Wv·n), n = RMSNorm(x).
            b.RmsNorm(s.X, w.AttentionNorm, s.Xb, T, c.Dim, c.RmsNormEps);        // n [T, dim]
            b.MatMul(s.Xb, w.Wq, s.Q, T, c.Dim, c.QueryDim);                        // q [T, heads*hd]
            b.MatMul(s.Xb, w.Wk, s.K, T, c.Dim, c.KvDim);                           // k [T, kvHeads*hd]
            b.MatMul(s.Xb, w.Wv, s.V, T, c.Dim, c.KvDim);                           // v [T, kvHeads*hd]
            b.Rope(s.Q, s.K, ropePositions, c.Heads, c.KvHeads, Rope);
            QueryTap?.Invoke(l, s.Q, positions);
            for (int i = 0; i < caches.Count; i++)
            {
                // The cache row is written once, straight from the projection.
                b.AppendKv(s.K, s.V, rowOffsets[i], positions.Slice(rowOffsets[i], lengths[i]), caches[i].Layers[l]);
                segments[i] = new AttentionSegment(caches[i].Layers[l], rowOffsets[i], lengths[i]);
            }
            b.Attention(s.Q, s.Att, segments, c.Heads, c.HeadDim);                  // att [T, heads*hd]
            LayerDone?.Invoke(l);
            b.MatMul(s.Att, w.Wo, s.Xb, T, c.QueryDim, c.Dim);                      // [T, dim]
            b.Add(s.X, s.Xb, (long)T * c.Dim);
            // Feed-forward block: x += W2 · (silu(W1·n) * W3·n), n = RMSNorm(x).
            b.RmsNorm(s.X, w.FfnNorm, s.Xb, T, c.Dim, c.RmsNormEps);
            b.MatMul(s.Xb, w.Gate, s.H1, T, c.Dim, c.HiddenDim);                    // [T, hidden]
            b.MatMul(s.Xb, w.Up, s.H3, T, c.Dim, c.HiddenDim);                      // [T, hidden]
            b.SwiGlu(s.H1, s.H3, (long)T * c.HiddenDim);
            b.MatMul(s.H1, w.Down, s.Xb, T, c.HiddenDim, c.Dim);                    // [T, dim]
            b.Add(s.X, s.Xb, (long)T * c.Dim);
        }
        for (int i = 0; i < caches.Count; i++) caches[i].TokensSeen += lengths[i];
        segments.Clear(); // the run state does not keep caches alive
        if (logits.IsEmpty) return;

        // Classifier: only the rows whose logits are wanted (the last one while prefilling).
        int rows = allRows ? T : 1, first = allRows ? 0 : T - 1;
        b.RmsNorm(s.X, Weights.FinalNorm, s.Xb, T, c.Dim, c.RmsNormEps);
        b.MatMul(s.Xb, Weights.Classifier, s.Logits, rows, c.Dim, c.VocabSize, xRowOffset: first);
        b.CopyToHost(s.Logits, 0, logits[..(rows * c.VocabSize)]);
    }

    public void Dispose()
    {
        _state.Dispose();
        Weights.Dispose();
        Backend.Dispose();
        _weightOwner?.Dispose();
    }

    /// <summary>Scratch activations for one chunk, allocated once so the decode loop allocates nothing.</summary>
    private sealed class RunState : IDisposable
    {
        public RunState(LlamaConfig c, IComputeBackend b, int maxTokens)
        {
            X = b.Allocate((long)maxTokens * c.Dim);
            Xb = b.Allocate((long)maxTokens * Math.Max(c.Dim, c.QueryDim));
            Q = b.Allocate((long)maxTokens * c.QueryDim);
            K = b.Allocate((long)maxTokens * c.KvDim);
            V = b.Allocate((long)maxTokens * c.KvDim);
            Att = b.Allocate((long)maxTokens * c.QueryDim);
            H1 = b.Allocate((long)maxTokens * c.HiddenDim);
            H3 = b.Allocate((long)maxTokens * c.HiddenDim);
            Logits = b.Allocate((long)maxTokens * c.VocabSize);
            Ones = new int[maxTokens];
            Array.Fill(Ones, 1);
            Lengths = new int[maxTokens];
            Segments = new AttentionSegment[maxTokens];
        }

        /// <summary>Segment lengths of a decode batch: one token per sequence.</summary>
        public int[] Ones { get; }

        /// <summary>Segment lengths of a pass with several tokens of some sequence.</summary>
        public int[] Lengths { get; }

        /// <summary>Attention segments of one pass (one per sequence).</summary>
        public AttentionSegment[] Segments { get; }

        /// <summary>The one cache and segment length of a single-sequence pass.</summary>
        public SequenceKvCache[] OneCache { get; } = new SequenceKvCache[1];
        public int[] OneLength { get; } = new int[1];

        public Tensor X { get; }
        public Tensor Xb { get; }
        public Tensor Q { get; }
        public Tensor K { get; }
        public Tensor V { get; }
        public Tensor Att { get; }
        public Tensor H1 { get; }
        public Tensor H3 { get; }
        public Tensor Logits { get; }

        public void Dispose()
        {
            foreach (var t in new[] { X, Xb, Q, K, V, Att, H1, H3, Logits }) t.Dispose();
        }
    }
}

/// <summary>Observes one layer's post-RoPE queries [T, heads*headDim] (a backend tensor) and the
/// tokens' original positions.</summary>
public delegate void QueryTap(int layer, Tensor queries, ReadOnlySpan<int> positions);
