using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Evaluation;

/// <summary>Negative log-likelihood of the targets at positions [Start, End) of the sequences.</summary>
public sealed record PositionBucket(int Start, int End, double NllSum, int Tokens)
{
    public double Perplexity => Tokens == 0 ? double.NaN : Math.Exp(NllSum / Tokens);
}

public sealed record StreamingPerplexityResult(string Policy, IReadOnlyList<PositionBucket> Buckets, double NllSum, int Tokens)
{
    public double Perplexity => Math.Exp(NllSum / Tokens);
}

/// <summary>
/// Perplexity as a stream sees it (the evaluation of StreamingLLM, Xiao et al. 2023, figure 3): every
/// sequence is fed one token at a time through a cache managed by the policy, exactly as generation
/// would run, and the loss of the token at position t is added to the bucket holding t. The buckets
/// show where a policy degrades: dense past the training context, window once the first tokens go.
/// </summary>
public static class StreamingPerplexity
{
    /// <summary>Bucket edges 0, 256, 512, 1k, 2k, 4k, ... up to the first edge at or past <paramref name="length"/>.</summary>
    public static int[] DefaultEdges(int length)
    {
        var edges = new List<int> { 0, 256 };
        while (edges[^1] < length) edges.Add(edges[^1] * 2);
        return [.. edges];
    }

    /// <param name="progress">Called with the number of tokens scored so far.</param>
    /// <param name="kvPrecision">Precision each token's K and V are rounded to once written (<see cref="KvCacheRounding"/>); fp32: untouched.</param>
    public static StreamingPerplexityResult Evaluate(LlamaModel model, IReadOnlyList<int[]> sequences, KvCompressionPolicy policy, int[] edges, Action<int>? progress = null,
        KvPrecision kvPrecision = KvPrecision.Fp32)
    {
        if (edges.Length < 2 || edges[0] != 0) throw new ArgumentException("bucket edges must start at 0 and hold at least two values", nameof(edges));
        int vocab = model.Config.VocabSize;
        var nll = new double[edges.Length - 1];
        var count = new int[edges.Length - 1];
        var logits = new float[vocab];
        int scored = 0;
        foreach (var ids in sequences)
        {
            using var cache = model.CreateCache(Math.Min(ids.Length, 1024), policy);
            for (int t = 0; t + 1 < ids.Length; t++)
            {
                KvRoom.Forward(model, [ids[t]], cache, logits);
                KvCacheRounding.RoundToken(model.Backend, cache, t, kvPrecision);
                int b = 0;
                while (b + 1 < nll.Length && t + 1 >= edges[b + 1]) b++;
                nll[b] -= PerplexityEvaluator.LogSoftmaxAt(logits, ids[t + 1]);
                count[b]++;
                if (++scored % 256 == 0) progress?.Invoke(scored);
            }
        }
        progress?.Invoke(scored);
        var buckets = Enumerable.Range(0, nll.Length).Select(b => new PositionBucket(edges[b], edges[b + 1], nll[b], count[b])).Where(b => b.Tokens > 0).ToList();
        var name = kvPrecision == KvPrecision.Fp32 ? policy.Name : $"{policy.Name} kv={kvPrecision.Name()}";
        return new StreamingPerplexityResult(name, buckets, nll.Sum(), count.Sum());
    }
}
