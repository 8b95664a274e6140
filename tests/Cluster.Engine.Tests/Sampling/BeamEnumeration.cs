using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>
/// The ground truth of the beam search tests: every continuation of a prompt up to a length, listed by
/// brute force and scored as beam search scores a hypothesis. Linked into the integration tests too, so
/// that a search through the cluster is checked against the same enumeration.
/// </summary>
internal static class BeamEnumeration
{
    /// <summary>
    /// Every output of at most <paramref name="length"/> tokens: those ended by an EOS id and those cut at
    /// the length, each scored sum_logprobs / length^length_penalty, best first. One forward pass per
    /// unfinished prefix: its last logits score all of its one-token extensions.
    /// </summary>
    public static List<(int[] Ids, double Score)> Enumerate(LlamaModel model, IReadOnlyList<int> prompt, int length, double lengthPenalty, IReadOnlyCollection<int> eos)
    {
        var all = new List<(int[], double)>();
        void Walk(List<int> prefix, double sum)
        {
            if (prefix.Count > 0 && (eos.Contains(prefix[^1]) || prefix.Count == length))
            {
                all.Add((prefix.ToArray(), sum / Math.Pow(prefix.Count, lengthPenalty)));
                return;
            }
            var logprobs = NextLogprobs(model, [.. prompt, .. prefix]);
            for (int t = 0; t < logprobs.Length; t++) Walk([.. prefix, t], sum + logprobs[t]);
        }
        Walk([], 0);
        return [.. all.OrderByDescending(x => x.Item2)];
    }

    /// <summary>The sum of the logprobs of <paramref name="output"/> after <paramref name="prompt"/>, from one pass over both.</summary>
    public static double SumLogprobs(LlamaModel model, IReadOnlyList<int> prompt, IReadOnlyList<int> output)
    {
        int vocab = model.Config.VocabSize;
        int[] ids = [.. prompt, .. output];
        var logits = new float[ids.Length * vocab];
        using (var cache = model.CreateCache()) KvRoom.Forward(model, ids, cache, logits, allLogits: true);
        double sum = 0;
        for (int i = 0; i < output.Count; i++)
            sum += LogSoftmax(logits.AsSpan((prompt.Count - 1 + i) * vocab, vocab).ToArray())[output[i]];
        return sum;
    }

    /// <summary>Log-probabilities of the token after <paramref name="ids"/>.</summary>
    private static double[] NextLogprobs(LlamaModel model, int[] ids)
    {
        var logits = new float[model.Config.VocabSize];
        using (var cache = model.CreateCache()) KvRoom.Forward(model, ids, cache, logits);
        return LogSoftmax(logits);
    }

    private static double[] LogSoftmax(float[] row)
    {
        double max = row.Max();
        double logZ = max + Math.Log(row.Sum(l => Math.Exp(l - max)));
        return [.. row.Select(l => l - logZ)];
    }
}
