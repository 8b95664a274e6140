using System.Diagnostics;
using Cluster.Engine.Model;
using System.Numerics.Tensors;

namespace Cluster.Engine.Generation;

/// <summary>One generated token with the time it took (prefill for the first, one decode step after).</summary>
public readonly record struct GeneratedToken(int Id, TimeSpan Elapsed);

/// <summary>
/// Greedy (argmax) generation: prefill the prompt in chunks, then one decode step per token, until
/// <c>maxTokens</c> or an end-of-sequence id. The sampling issue replaces argmax with the sampler chain.
/// </summary>
public static class GreedyGenerator
{
    public static IEnumerable<GeneratedToken> Generate(LlamaModel model, IReadOnlyList<int> prompt, int maxTokens, bool stopAtEos = true)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt needs at least one token (e.g. BOS)", nameof(prompt));
        var logits = new float[model.Config.VocabSize];
        using var cache = model.CreateCache(prompt.Count + maxTokens);
        var sw = Stopwatch.StartNew();
        model.Forward(prompt.ToArray(), cache, logits);
        for (int i = 0; i < maxTokens; i++)
        {
            int next = TensorPrimitives.IndexOfMax(logits);
            yield return new GeneratedToken(next, sw.Elapsed);
            if (stopAtEos && model.Config.EosIds.Contains(next)) yield break;
            if (i + 1 == maxTokens) yield break;
            sw.Restart();
            model.Forward([next], cache, logits);
        }
    }
}
