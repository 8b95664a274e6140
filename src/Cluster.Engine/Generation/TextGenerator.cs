using System.Diagnostics;
using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Generation;

/// <summary>
/// The generation loop for one request on one model: prefill the prompt once, then for each of the
/// n outputs sample a token, stream it, and run it through the model, until each output ends (eos,
/// stop, length) or the request is cancelled (abort). The n outputs continue copies of the prompt's
/// KV cache rather than recomputing it. Beam search (num_beams &gt; 1) goes to <see cref="BeamSearch"/>.
/// Not thread-safe, like the model.
/// </summary>
public sealed class TextGenerator(LlamaModel model, ITokenizer? tokenizer = null)
{
    /// <summary>
    /// Streams the chunks of every output; the outputs of one step come in index order. Throws
    /// <see cref="ArgumentException"/> at once (not on enumeration) for bad parameters or prompt.
    /// </summary>
    /// <param name="resume">Continue a stream from a cache and the tokens it already produced; with
    /// the same seed the rest is the same as in the uninterrupted run.</param>
    /// <param name="policy">KV compression for sampled outputs: the prompt is prefilled densely, compressed to
    /// the budget at once, and each step then evicts as the cache grows (what the cluster does on ingest).</param>
    public IEnumerable<GenerationChunk> Generate(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel = default, GenerationResume? resume = null, KvCompressionPolicy? policy = null)
    {
        Validate(prompt, p, resume);
        if (policy is not null && p.IsBeamSearch) throw new ArgumentException("KV compression policies are not supported with beam search");
        p = p.WithResolvedSeed();
        return p.IsBeamSearch ? new BeamSearch(model, tokenizer, p).Run(prompt, cancel) : Sample(prompt, p, cancel, resume, policy);
    }

    private void Validate(IReadOnlyList<int> prompt, SamplingParameters p, GenerationResume? resume)
    {
        var c = model.Config;
        p.Validate(c.VocabSize);
        if (prompt.Count == 0) throw new ArgumentException("the prompt needs at least one token (e.g. BOS)", nameof(prompt));
        foreach (var id in prompt)
            if (id < 0 || id >= c.VocabSize) throw new ArgumentException($"prompt token {id} is outside the vocabulary [0, {c.VocabSize})", nameof(prompt));
        if (prompt.Count >= c.MaxPositions) throw new ArgumentException($"the prompt has {prompt.Count} tokens but the model's context is {c.MaxPositions}", nameof(prompt));
        if (p.Stop.Count > 0 && tokenizer is null) throw new ArgumentException("stop strings need a tokenizer");
        // Choosing the best of several outputs needs all of them finished; the cluster's gateway does it.
        if (p.Outputs > p.N) throw new ArgumentException($"best_of > n is served by the cluster (the gateway ranks the outputs); run n={p.Outputs} and rank them by cumulative logprob");
        if (resume is null) return;
        if (p.IsBeamSearch || p.N != 1) throw new ArgumentException("resuming works for one sampled output (n = 1, num_beams = 1)");
        if (p.Seed is null) throw new ArgumentException("resuming needs the seed of the original request");
        int total = prompt.Count + resume.Generated.Count;
        if (resume.Generated.Count >= p.MaxTokens) throw new ArgumentException($"nothing to resume: {resume.Generated.Count} tokens already generated, max_tokens is {p.MaxTokens}");
        if (resume.Cache.TokensSeen > total || resume.Cache.TokensSeen < prompt.Count)
            throw new ArgumentException($"the resume cache holds {resume.Cache.TokensSeen} tokens; expected between the prompt's {prompt.Count} and {total}");
    }

    private IEnumerable<GenerationChunk> Sample(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel, GenerationResume? resume, KvCompressionPolicy? policy)
    {
        var c = model.Config;
        var generated = resume?.Generated ?? [];
        var outputs = new List<SequenceGeneration>();
        try
        {
            // Prefill: the prompt (and, when resuming, what the cache lacks of the output so far).
            var sw = Stopwatch.StartNew();
            var cache = resume?.Cache ?? model.CreateCache(Math.Min(prompt.Count + p.MaxTokens, c.MaxPositions));
            var first = new SequenceGeneration(c, p, tokenizer, prompt, cache, resume?.Index ?? 0, ownsCache: resume is null);
            outputs.Add(first);
            int[] all = [.. prompt, .. generated];
            if (cache.TokensSeen == all.Length) cache.Truncate(all.Length - 1); // re-run the last token for its logits
            model.Forward(all.AsSpan(cache.TokensSeen), cache, first.Logits);
            if (policy is not null && cache.Policy is null)
            {
                cache.Policy = policy;
                policy.Compress(model, cache);
            }
            foreach (var id in generated) first.Replay(id); // already streamed: replay only the state
            var elapsed = new TimeSpan[Math.Max(p.N, first.Index + 1)];
            elapsed[first.Index] = sw.Elapsed;
            for (int j = 1; j < p.N; j++)
            {
                outputs.Add(first.Fork(j, tokenizer, prompt));
                elapsed[j] = elapsed[first.Index];
            }

            while (outputs.Any(o => !o.Done))
            {
                foreach (var o in outputs)
                {
                    if (o.Done) continue;
                    if (cancel.IsCancellationRequested)
                    {
                        yield return o.Abort();
                        continue;
                    }
                    sw.Restart();
                    yield return o.Step(elapsed[o.Index] + sw.Elapsed);
                    if (o.Pending is not int next) continue;
                    sw.Restart();
                    model.Forward([next], o.Cache, o.Logits);
                    elapsed[o.Index] = sw.Elapsed;
                }
            }
        }
        finally
        {
            foreach (var o in outputs) o.Dispose();
        }
    }
}
