using System.Diagnostics;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Generation;

/// <summary>
/// Beam search as in Hugging Face's BeamSearchScorer: at each step every live beam proposes its
/// 2·num_beams best next tokens (log-softmax of the logits after penalties, logit_bias and
/// min_tokens; no temperature or filters), the best 2·num_beams of all proposals are taken in
/// order, an ending token (EOS, stop_token_ids) among the first num_beams finishes a hypothesis,
/// and the first num_beams others become the new beams. A hypothesis scores
/// sum_logprobs / length^length_penalty, length counting generated tokens (the ending one too).
/// Beams that share a parent share the prompt's KV through copies of the parent's cache.
/// Ends at max_tokens, or earlier once num_beams hypotheses are finished and either early_stopping
/// is set or no live beam can still beat the worst of them: sums only fall, so the best a beam can
/// reach is its sum / max_length^length_penalty when length_penalty &gt; 0 and sum / current_length^length_penalty
/// otherwise (Hugging Face's bound for early_stopping=False, which is exact).
/// </summary>
public sealed class BeamSearch(LlamaModel model, ITokenizer? tokenizer, SamplingParameters p)
{
    private sealed record Beam(SequenceKvCache Cache, SamplingState State, float[] Logits, double Sum, IReadOnlyList<TokenLogprobs?> Logprobs);

    private sealed record Hypothesis(IReadOnlyList<int> Ids, IReadOnlyList<TokenLogprobs?> Logprobs, double Sum, double Score, FinishReason Finish);

    private readonly record struct Proposal(int Parent, int Token, double Sum, float Logprob);

    /// <summary>The whole search for <paramref name="prompt"/> in one go (prefill included): the chunks of
    /// the best n hypotheses, output by output, once it has ended.</summary>
    public IEnumerable<GenerationChunk> Run(IReadOnlyList<int> prompt, CancellationToken cancel)
    {
        var c = model.Config;
        var cache = model.CreateCache(Math.Min(prompt.Count + Math.Min(p.MaxTokens, c.MaxPositions - prompt.Count), c.MaxPositions));
        return Steps(prompt, cache, cancel).SelectMany(chunks => chunks);
    }

    /// <summary>
    /// The search one model step at a time, so that whoever owns the model (a decode worker's batch
    /// thread) can interleave it with other work: each enumeration step runs one forward pass of every
    /// beam and yields nothing, and the last one yields the chunks of the best n hypotheses.
    /// </summary>
    /// <param name="cache">A dense cache holding a prefix of the prompt (empty, or the whole prompt as a
    /// prefill worker stored it); the search owns and frees it. Its capacity bounds the beams' caches,
    /// which are copies of it.</param>
    public IEnumerable<IReadOnlyList<GenerationChunk>> Steps(IReadOnlyList<int> prompt, SequenceKvCache cache, CancellationToken cancel)
    {
        var c = model.Config;
        int width = p.NumBeams, vocab = c.VocabSize;
        int maxLength = Math.Min(p.MaxTokens, c.MaxPositions - prompt.Count);
        var processors = new SamplerChain(SamplerChain.LogitProcessors(p, c.EosIds));
        var candidates = new TokenCandidates(vocab);
        var logprobs = new float[vocab];
        var finished = new List<Hypothesis>();
        var sw = Stopwatch.StartNew();

        var root = new Beam(cache, new SamplingState(vocab, prompt, 0), new float[vocab], 0, []);
        var live = new List<Beam> { root };
        var stepTimes = new List<TimeSpan>(); // [0]: prefill; [i]: the step that produced token i
        bool aborted = false;
        try
        {
            // The root's logits: run what the cache lacks of the prompt (at least its last token).
            if (cache.TokensSeen == prompt.Count) cache.Truncate(prompt.Count - 1);
            KvRoom.Forward(model, prompt.Skip(cache.TokensSeen).ToArray(), cache, root.Logits);
            stepTimes.Add(sw.Elapsed);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
        try
        {
            for (int step = 0; step < maxLength && live.Count > 0; step++)
            {
                yield return [];
                if (cancel.IsCancellationRequested) { aborted = true; break; }
                sw.Restart();
                var proposals = new List<Proposal>();
                for (int b = 0; b < live.Count; b++)
                {
                    candidates.Reset(live[b].Logits);
                    processors.Apply(candidates, live[b].State); // id order is kept: only logits change
                    LogSoftmax(candidates.Logits, logprobs);
                    foreach (var token in TopIds(logprobs, 2 * width))
                        proposals.Add(new Proposal(b, token, live[b].Sum + logprobs[token], logprobs[token]));
                }
                proposals.Sort((x, y) => y.Sum.CompareTo(x.Sum));

                bool mayEnd = step >= p.MinTokens;
                var next = new List<Proposal>();
                for (int rank = 0; rank < proposals.Count && next.Count < width; rank++)
                {
                    var q = proposals[rank];
                    FinishReason? ending = !mayEnd ? null
                        : !p.IgnoreEos && c.EosIds.Contains(q.Token) ? FinishReason.Eos
                        : p.StopTokenIds.Contains(q.Token) ? FinishReason.Stop : null;
                    if (ending is null) next.Add(q);
                    else if (rank < width) finished.Add(Finish(live[q.Parent], q, ending.Value, step + 1));
                }

                if (step + 1 == maxLength)
                {
                    foreach (var q in next) finished.Add(Finish(live[q.Parent], q, FinishReason.Length, step + 1));
                    break;
                }
                finished.Sort((x, y) => y.Score.CompareTo(x.Score));
                if (finished.Count > width) finished.RemoveRange(width, finished.Count - width);
                if (next.Count == 0 || IsDone(finished, next[0].Sum, step + 1, maxLength)) break;
                live = Advance(live, next);
                stepTimes.Add(sw.Elapsed);
            }
        }
        finally
        {
            foreach (var beam in live) beam.Cache.Dispose();
        }
        if (aborted)
            foreach (var beam in live) finished.Add(new Hypothesis(beam.State.Generated, beam.Logprobs, beam.Sum, Score(beam.Sum, beam.State.Step), FinishReason.Abort));

        var best = finished.OrderByDescending(h => h.Score).Take(p.N).ToList();
        yield return best.SelectMany((h, i) => Chunks(i, h, prompt, stepTimes)).ToList();
    }

    private bool IsDone(List<Hypothesis> finished, double bestLiveSum, int length, int maxLength)
    {
        if (finished.Count < p.NumBeams) return false;
        if (p.EarlyStopping) return true;
        double reachable = bestLiveSum / Math.Pow(p.LengthPenalty > 0 ? maxLength : length, p.LengthPenalty);
        return finished[^1].Score >= reachable;
    }

    private double Score(double sum, int length) => sum / Math.Pow(Math.Max(length, 1), p.LengthPenalty);

    private Hypothesis Finish(Beam parent, Proposal q, FinishReason reason, int length) =>
        new([.. parent.State.Generated, q.Token], [.. parent.Logprobs, LogprobsFor(parent, q)], q.Sum, Score(q.Sum, length), reason);

    private TokenLogprobs? LogprobsFor(Beam parent, Proposal q) =>
        p.Logprobs is int top ? TokenLogprobs.Compute(parent.Logits, q.Token, top) : null;

    /// <summary>The new beams: the first child of a parent takes over its cache, the others get copies;
    /// a parent with no child frees its cache. Then each new beam runs its token.</summary>
    private List<Beam> Advance(List<Beam> live, List<Proposal> next)
    {
        var taken = new bool[live.Count];
        var beams = new List<Beam>(next.Count);
        foreach (var q in next) // every copy is made before any forward moves a cache on
        {
            var parent = live[q.Parent];
            var cache = taken[q.Parent] ? parent.Cache.Clone() : parent.Cache;
            taken[q.Parent] = true;
            beams.Add(new Beam(cache, parent.State.Clone(), new float[parent.Logits.Length], q.Sum, [.. parent.Logprobs, LogprobsFor(parent, q)]));
            beams[^1].State.Accept(q.Token);
        }
        for (int b = 0; b < live.Count; b++)
            if (!taken[b]) live[b].Cache.Dispose();
        live.Clear();
        live.AddRange(beams); // so the caller's finally frees these if a forward throws
        foreach (var beam in beams) KvRoom.Forward(model, [beam.State.Generated[^1]], beam.Cache, beam.Logits);
        return beams;
    }

    /// <summary>A finished output as chunks, once the search is over (beams cannot stream: any may still lose).
    /// Each token carries the time of the search step that produced it, shared by all beams.</summary>
    private IEnumerable<GenerationChunk> Chunks(int index, Hypothesis h, IReadOnlyList<int> prompt, List<TimeSpan> stepTimes)
    {
        var text = new OutputText(tokenizer, prompt, []);
        for (int i = 0; i < h.Ids.Count; i++)
        {
            bool last = i == h.Ids.Count - 1;
            bool ending = last && h.Finish is FinishReason.Eos or FinishReason.Stop;
            var piece = ending ? "" : text.Push(h.Ids[i], canStop: false, out _);
            if (last) piece += text.Flush();
            yield return new GenerationChunk(index, h.Ids[i], piece, h.Logprobs[i], last ? h.Finish : null,
                stepTimes[Math.Min(i, stepTimes.Count - 1)], last ? h.Score : null);
        }
        if (h.Ids.Count == 0) yield return new GenerationChunk(index, null, "", null, h.Finish, TimeSpan.Zero, h.Score);
    }

    private static void LogSoftmax(ReadOnlySpan<float> logits, Span<float> result)
    {
        float max = float.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        float logZ = (float)(max + Math.Log(sum));
        for (int i = 0; i < logits.Length; i++) result[i] = logits[i] - logZ;
    }

    /// <summary>Ids of the <paramref name="k"/> largest values, excluding -infinity (banned tokens).</summary>
    private static IEnumerable<int> TopIds(float[] values, int k) =>
        Enumerable.Range(0, values.Length).Where(i => values[i] > float.NegativeInfinity)
            .OrderByDescending(i => values[i]).ThenBy(i => i).Take(k);
}
