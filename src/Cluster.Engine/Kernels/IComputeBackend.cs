using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Kernels;

/// <summary>
/// The kernels a Llama forward pass needs, over backend-owned <see cref="Tensor"/>s. All matrices
/// are row-major; a weight matrix W of a linear layer is stored [out, in] (PyTorch's layout).
/// Shapes in the comments use T for the number of tokens in a call.
/// </summary>
public interface IComputeBackend : IDisposable
{
    /// <summary>Short description for logs, e.g. "cpu (OpenBLAS, 2 threads)".</summary>
    string Name { get; }

    /// <summary>The most rows a matrix product of <paramref name="format"/> weights computes so that each
    /// row's result is bit for bit what that row alone gives (the same kernel and summation order for every
    /// row count up to it). A sequence may then run several of its tokens in one pass exactly as it would
    /// run them one at a time. 1 where the backend does not promise it.</summary>
    int RowExactRows(WeightType format) => 1;

    /// <summary>Allocates <paramref name="length"/> floats, zero-filled.</summary>
    Tensor Allocate(long length);

    /// <summary>
    /// Makes a weight tensor from host data, kept in its format (<see cref="WeightData.Type"/>:
    /// F32, F16, BF16 or Q8_0 rows; the result's <see cref="Tensor.Format"/> says which). The CPU
    /// backend keeps a reference to <paramref name="source"/> (memory-mapped or loader-owned)
    /// instead of copying, except Q8_0, which it repacks for its int8 kernels (<see cref="ReadsSource"/>).
    /// A backend without kernels for a format throws
    /// <see cref="NotSupportedException"/> naming it (the loader can convert with --weights).
    /// Norm weights are always passed as F32.
    /// </summary>
    Tensor LoadWeights(WeightData source);

    /// <summary>Whether <paramref name="weights"/> (from <see cref="LoadWeights"/>) still reads the host
    /// memory it was made from; where not, the loader frees a buffer it converted into at once, so a
    /// copy does not double resident memory.</summary>
    bool ReadsSource(Tensor weights) => true;

    void CopyFromHost(ReadOnlySpan<float> source, Tensor destination, long offset = 0);

    void CopyToHost(Tensor source, long offset, Span<float> destination);

    /// <summary>x[t, :] = table[tokens[t], :] for each token; table is [vocab, dim] in any weight format (rows dequantized).</summary>
    void Embed(Tensor table, ReadOnlySpan<int> tokens, int dim, Tensor x);

    /// <summary>y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for <paramref name="rows"/> rows of <paramref name="dim"/>.</summary>
    void RmsNorm(Tensor x, Tensor weight, Tensor y, int rows, int dim, float eps);

    /// <summary>y[rows, out] = x[rows, in] · W[out, in]^T, starting at row <paramref name="xRowOffset"/> of x;
    /// dispatches on <paramref name="w"/>'s <see cref="Tensor.Format"/>, dequantizing inside the product.
    /// x and y are fp32.</summary>
    void MatMul(Tensor x, Tensor w, Tensor y, int rows, int inDim, int outDim, int xRowOffset = 0);

    /// <summary>Rotates each head of q [T, heads*headDim] and k [T, kvHeads*headDim] in place by the
    /// angles of <paramref name="positions"/> (one per token), reading pairs in the layout of
    /// <paramref name="rope"/> and writing every head in the half-split layout (the KV cache's one layout).</summary>
    void Rope(Tensor q, Tensor k, ReadOnlySpan<int> positions, int heads, int kvHeads, RopeTable rope);

    /// <summary>Appends T tokens' keys and values (k, v: [T, kvHeads*headDim], keys already rotated)
    /// to every head of <paramref name="layer"/> at its current length, recording their positions.
    /// Reads rows <paramref name="rowOffset"/>.. of k and v (one row per position).</summary>
    void AppendKv(Tensor k, Tensor v, int rowOffset, ReadOnlySpan<int> positions, KvCacheLayer layer);

    /// <summary>Keeps only the slots <paramref name="keep"/> (ascending) of one head of <paramref name="layer"/>:
    /// their keys, values and positions move to slots 0..keep.Length-1 in that order and the head's
    /// length becomes keep.Length. The compaction step of every KV-cache compression policy.</summary>
    void CompactKv(KvCacheLayer layer, int head, ReadOnlySpan<int> keep);

    /// <summary>Copies slot <paramref name="from"/> of one head of <paramref name="layer"/> (key, value and
    /// position) over slot <paramref name="to"/>; lengths are unchanged. Attention treats a head's slots
    /// as a set, so a window policy fills an evicted slot with the last one instead of shifting the whole
    /// window down (one row moved per evicted token; see OldestFirstEviction).</summary>
    void MoveKvSlot(KvCacheLayer layer, int head, int from, int to);

    /// <summary>Rotates the cached keys of slots 0..deltas.Length-1 of one head by deltas[i] positions
    /// (half-split layout). RoPE rotations compose, so a key rotated at position p and then by d equals
    /// the key rotated at p + d up to rounding: this moves keys to new positions without their
    /// pre-RoPE values (StreamingLLM's in-cache positions).</summary>
    void RotateKeys(KvCacheLayer layer, int head, ReadOnlySpan<int> deltas, RopeTable rope);

    /// <summary>Causal grouped-query attention for several sequences at once: each segment's queries
    /// (rows RowOffset.. of q [rows, heads*headDim]) attend over its own cache layer, whose last Tokens
    /// entries per head are the segment's own tokens; writes the same rows of <paramref name="output"/>.</summary>
    void Attention(Tensor q, Tensor output, ReadOnlySpan<AttentionSegment> segments, int heads, int headDim);

    /// <summary>gate = silu(gate) * up, elementwise over <paramref name="length"/> floats.</summary>
    void SwiGlu(Tensor gate, Tensor up, long length);

    /// <summary>x += y, elementwise over <paramref name="length"/> floats.</summary>
    void Add(Tensor x, Tensor y, long length);
}

/// <summary>One sequence's rows in a batched attention call.</summary>
/// <param name="Cache">The sequence's cache layer.</param>
/// <param name="RowOffset">First row of the sequence in q and the output.</param>
/// <param name="Tokens">Rows of the sequence (its newest cache entries).</param>
public readonly record struct AttentionSegment(KvCacheLayer Cache, int RowOffset, int Tokens);
