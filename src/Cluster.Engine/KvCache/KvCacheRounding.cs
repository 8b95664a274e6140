using Cluster.Engine.Kernels;

namespace Cluster.Engine.KvCache;

/// <summary>
/// Rounds KV held in a cache to a <see cref="KvPrecision"/>, with the conversion the wire uses
/// (<see cref="KvConvert"/>): how `llmctl perplexity --kv-dtype` measures what 16-bit KV blocks cost
/// without a cluster. Rounding each token's K and V right after the forward pass that wrote them means
/// every later token attends to rounded KV, as if every token had travelled: an upper bound on what a
/// cluster does, where a decode worker's own tokens stay fp32 until they are checkpointed and read back.
/// </summary>
public static class KvCacheRounding
{
    /// <summary>Rounds the K and V of the token at original position <paramref name="position"/> in every
    /// layer and head that keeps it.</summary>
    public static void RoundToken(IComputeBackend backend, SequenceKvCache cache, int position, KvPrecision precision)
    {
        if (precision == KvPrecision.Fp32) return;
        foreach (var l in cache.Layers)
        {
            l.Rewritten();
            var row = new float[l.HeadDim];
            for (int h = 0; h < l.KvHeads; h++)
            {
                if (l.Lengths[h] == 0) continue;
                // Newest tokens are usually last, but a window policy's ring puts them anywhere.
                int slot = Array.LastIndexOf(l.Positions, position, h * l.Capacity + l.Lengths[h] - 1, l.Lengths[h]) - h * l.Capacity;
                if (slot < 0) continue;
                foreach (var t in new[] { l.K, l.V })
                {
                    backend.CopyToHost(t, l.Offset(h, slot), row);
                    KvConvert.Round(row, precision);
                    backend.CopyFromHost(row, t, l.Offset(h, slot));
                }
            }
        }
    }
}
