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

    /// <summary>Allocates <paramref name="length"/> floats, zero-filled.</summary>
    Tensor Allocate(long length);

    /// <summary>Makes a weight tensor from host data; the CPU backend may keep a reference to
    /// <paramref name="source"/> (for memory-mapped fp32 weights) instead of copying.</summary>
    Tensor LoadWeights(WeightData source);

    void CopyFromHost(ReadOnlySpan<float> source, Tensor destination, long offset = 0);

    void CopyToHost(Tensor source, long offset, Span<float> destination);

    /// <summary>x[t, :] = table[tokens[t], :] for each token; table is [vocab, dim].</summary>
    void Embed(Tensor table, ReadOnlySpan<int> tokens, int dim, Tensor x);

    /// <summary>y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for <paramref name="rows"/> rows of <paramref name="dim"/>.</summary>
    void RmsNorm(Tensor x, Tensor weight, Tensor y, int rows, int dim, float eps);

    /// <summary>y[rows, out] = x[rows, in] · W[out, in]^T, starting at row <paramref name="xRowOffset"/> of x.</summary>
    void MatMul(Tensor x, Tensor w, Tensor y, int rows, int inDim, int outDim, int xRowOffset = 0);

    /// <summary>Rotates each head of q [T, heads*headDim] and k [T, kvHeads*headDim] in place by the
    /// angles of <paramref name="positions"/> (one per token), reading pairs in the layout of
    /// <paramref name="rope"/> and writing every head in the half-split layout (the KV cache's one layout).</summary>
    void Rope(Tensor q, Tensor k, ReadOnlySpan<int> positions, int heads, int kvHeads, RopeTable rope);

    /// <summary>Appends T tokens' keys and values (k, v: [T, kvHeads*headDim], keys already rotated)
    /// to every head of <paramref name="layer"/> at its current length, recording their positions.</summary>
    void AppendKv(Tensor k, Tensor v, ReadOnlySpan<int> positions, KvCacheLayer layer);

    /// <summary>Keeps only the slots <paramref name="keep"/> (ascending) of one head of <paramref name="layer"/>:
    /// their keys, values and positions move to slots 0..keep.Length-1 in that order and the head's
    /// length becomes keep.Length. The compaction step of every KV-cache compression policy.</summary>
    void CompactKv(KvCacheLayer layer, int head, ReadOnlySpan<int> keep);

    /// <summary>Rotates the cached keys of slots 0..deltas.Length-1 of one head by deltas[i] positions
    /// (half-split layout). RoPE rotations compose, so a key rotated at position p and then by d equals
    /// the key rotated at p + d up to rounding: this moves keys to new positions without their
    /// pre-RoPE values (StreamingLLM's in-cache positions).</summary>
    void RotateKeys(KvCacheLayer layer, int head, ReadOnlySpan<int> deltas, RopeTable rope);

    /// <summary>Causal grouped-query attention of T queries [T, heads*headDim] over one layer of
    /// <paramref name="cache"/>, whose last T entries per head are this call's own tokens; writes
    /// [T, heads*headDim] to <paramref name="output"/>.</summary>
    void Attention(Tensor q, KvCacheLayer cache, Tensor output, int tokens, int heads, int headDim);

    /// <summary>gate = silu(gate) * up, elementwise over <paramref name="length"/> floats.</summary>
    void SwiGlu(Tensor gate, Tensor up, long length);

    /// <summary>x += y, elementwise over <paramref name="length"/> floats.</summary>
    void Add(Tensor x, Tensor y, long length);
}
