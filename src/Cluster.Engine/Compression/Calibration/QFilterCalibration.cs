using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression.Calibration;

/// <summary>
/// Q-Filters calibration (Godey et al. 2025, section 3; DESIGN.md): run the model over calibration
/// text, sample post-RoPE queries per layer and query head at random positions, and take the first
/// right singular vector v of each head's sample matrix Q [samples, headDim]. Its sign is fixed so
/// that most entries of the first left singular vector u = Qv/σ are positive (sign s): s·v is then the
/// direction most queries point along, and a key with a large &lt;k, s·v&gt; tends to receive attention.
/// The stored filter is f = -s·v, so that the eviction score -&lt;k, f&gt; = &lt;k, s·v&gt; is highest for
/// the keys to keep. Query heads sharing a KV head (GQA) are averaged into one filter.
/// </summary>
public static class QFilterCalibration
{
    /// <summary>The published defaults: 2048-token sequences, 3000 sampled positions.</summary>
    public const int DefaultSequenceLength = 2048, DefaultSamples = 3000;

    /// <summary>f = -s·v for one head's queries [rows, headDim] (see the class summary for s).</summary>
    public static float[] FilterOf(ReadOnlySpan<float> queries, int rows, int headDim)
    {
        var (v, _) = TopSingularVector.Compute(queries, rows, headDim);
        int positive = 0;
        for (int r = 0; r < rows; r++)
        {
            double u = 0;
            var q = queries.Slice(r * headDim, headDim);
            for (int i = 0; i < headDim; i++) u += q[i] * v[i];
            if (u > 0) positive++;
        }
        double s = 2 * positive > rows ? 1 : -1;
        var f = new float[headDim];
        for (int i = 0; i < headDim; i++) f[i] = (float)(-s * v[i]);
        return f;
    }

    /// <summary>Filters from sampled queries: <paramref name="queries"/>[layer][queryHead] is [rows, headDim].</summary>
    public static QFilters FromQueries(float[][][] queries, int rows, int kvHeads, int headDim)
    {
        int layers = queries.Length, heads = queries[0].Length, group = heads / kvHeads;
        var data = new float[layers * kvHeads * headDim];
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < heads; h++)
            {
                var f = FilterOf(queries[l][h], rows, headDim);
                var target = data.AsSpan((l * kvHeads + h / group) * headDim, headDim);
                for (int i = 0; i < headDim; i++) target[i] += f[i] / group;
            }
        return new QFilters(layers, kvHeads, headDim, data);
    }

    /// <summary>
    /// Runs <paramref name="model"/> densely over each sequence and calibrates on
    /// <paramref name="samples"/> positions drawn uniformly (without replacement, seeded) from all of them.
    /// </summary>
    /// <param name="progress">Called after each sequence with the number done.</param>
    public static QFilters Calibrate(LlamaModel model, IReadOnlyList<int[]> sequences, int samples = DefaultSamples, int seed = 0, Action<int>? progress = null)
    {
        var c = model.Config;
        int total = sequences.Sum(s => s.Length);
        if (total == 0) throw new ArgumentException("no calibration tokens", nameof(sequences));
        int rows = Math.Min(samples, total);
        if (rows < 1) throw new ArgumentOutOfRangeException(nameof(samples), $"need at least one sample, got {samples}");

        // Row of each sampled (sequence, position), -1 when not sampled: a seeded partial shuffle.
        var pick = Enumerable.Range(0, total).ToArray();
        var rng = new Random(seed);
        for (int i = 0; i < rows; i++)
        {
            int j = rng.Next(i, total);
            (pick[i], pick[j]) = (pick[j], pick[i]);
        }
        var rowOf = new int[total];
        Array.Fill(rowOf, -1);
        for (int i = 0; i < rows; i++) rowOf[pick[i]] = i;

        var queries = new float[c.Layers][][];
        for (int l = 0; l < c.Layers; l++)
        {
            queries[l] = new float[c.Heads][];
            for (int h = 0; h < c.Heads; h++) queries[l][h] = new float[rows * c.HeadDim];
        }
        var logits = new float[c.VocabSize];
        var host = new float[model.MaxChunk * c.QueryDim];
        int offset = 0;
        try
        {
            model.QueryTap = (layer, q, positions) =>
            {
                int T = positions.Length;
                bool any = false;
                for (int t = 0; t < T && !any; t++) any = rowOf[offset + positions[t]] >= 0;
                if (!any) return;
                model.Backend.CopyToHost(q, 0, host.AsSpan(0, T * c.QueryDim));
                for (int t = 0; t < T; t++)
                {
                    int row = rowOf[offset + positions[t]];
                    if (row < 0) continue;
                    for (int h = 0; h < c.Heads; h++)
                        host.AsSpan((t * c.Heads + h) * c.HeadDim, c.HeadDim).CopyTo(queries[layer][h].AsSpan(row * c.HeadDim));
                }
            };
            for (int s = 0; s < sequences.Count; s++)
            {
                // Sequences past the context are the caller's choice (llmctl calibrate warns): their queries extrapolate.
                using var cache = model.CreateCache(sequences[s].Length, DensePolicy.Extrapolating);
                KvRoom.Forward(model, sequences[s], cache, logits);
                offset += sequences[s].Length;
                progress?.Invoke(s + 1);
            }
        }
        finally
        {
            model.QueryTap = null;
        }
        return FromQueries(queries, rows, c.KvHeads, c.HeadDim);
    }
}
