using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Evaluation;

/// <summary>Result of a perplexity run: exp(nllSum / tokensScored).</summary>
public sealed record PerplexityResult(double Perplexity, double NllSum, int TokensScored, int Window, int Stride);

/// <summary>
/// Perplexity of a token sequence with strided windows (the method of Hugging Face's "Perplexity of
/// fixed-length models" guide): windows of at most <c>window</c> tokens start every <c>stride</c>
/// tokens, each from an empty cache, and score only the tokens that no earlier window scored, so
/// every token 1..N-1 is scored exactly once with at least window - stride tokens of context
/// (except near the start). tests/reference/llama_ref.py implements the same rule independently.
/// </summary>
public static class PerplexityEvaluator
{
    /// <param name="progress">Called with the number of tokens scored so far.</param>
    public static PerplexityResult Evaluate(LlamaModel model, ReadOnlySpan<int> ids, int? window = null, int? stride = null, Action<int>? progress = null)
    {
        int w = window ?? model.Config.MaxPositions;
        int s = stride ?? Math.Max(1, w / 2);
        if (w < 2) throw new ArgumentOutOfRangeException(nameof(window), $"window must be at least 2 tokens, got {w}");
        if (s < 1 || s > w - 1) throw new ArgumentOutOfRangeException(nameof(stride), $"stride must be in 1..window-1 ({w - 1}), got {s}");
        if (ids.Length < 2) throw new ArgumentException($"need at least 2 tokens to score, got {ids.Length}", nameof(ids));

        int vocab = model.Config.VocabSize;
        var logits = new float[(long)w * vocab];
        double nll = 0;
        int scored = 0, prevEnd = 0;
        for (int begin = 0; begin < ids.Length; begin += s)
        {
            int end = Math.Min(begin + w, ids.Length);
            // A window past the model's context is the caller's choice: it measures extrapolation.
            using (var cache = model.CreateCache(end - begin, DensePolicy.Extrapolating))
                KvRoom.Forward(model, ids[begin..end], cache, logits, allLogits: true);
            for (int t = Math.Max(prevEnd, begin + 1); t < end; t++)
            {
                nll -= LogSoftmaxAt(logits.AsSpan((t - 1 - begin) * vocab, vocab), ids[t]);
                scored++;
            }
            progress?.Invoke(scored);
            prevEnd = end;
            if (end == ids.Length) break;
        }
        return new PerplexityResult(Math.Exp(nll / scored), nll, scored, w, s);
    }

    /// <summary>log softmax(logits)[target], in double for a stable sum over thousands of tokens.</summary>
    public static double LogSoftmaxAt(ReadOnlySpan<float> logits, int target)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(logits);
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        return logits[target] - max - Math.Log(sum);
    }
}
