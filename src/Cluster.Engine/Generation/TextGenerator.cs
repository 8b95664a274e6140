using System.Diagnostics;
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
    public IEnumerable<GenerationChunk> Generate(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel = default, GenerationResume? resume = null)
    {
        Validate(prompt, p, resume);
        p = p.WithResolvedSeed();
        return p.IsBeamSearch ? new BeamSearch(model, tokenizer, p).Run(prompt, cancel) : Sample(prompt, p, cancel, resume);
    }

    private void Validate(IReadOnlyList<int> prompt, SamplingParameters p, GenerationResume? resume)
    {
        var c = model.Config;
        p.Validate(c.VocabSize);
        if (prompt.Count == 0) throw new ArgumentException("the prompt needs at least one token (e.g. BOS)", nameof(prompt));
        foreach (var id in prompt)
            if (id < 0 || id >= c.VocabSize) throw new ArgumentException($"prompt token {id} is outside the vocabulary [0, {c.VocabSize})", nameof(prompt));
        if (prompt.Count >= c.MaxPositions) throw new ArgumentException($"the prompt has {prompt.Count} tokens; the model's context is {c.MaxPositions}", nameof(prompt));
        if (p.Stop.Count > 0 && tokenizer is null) throw new ArgumentException("stop strings need a tokenizer");
        if (p.IsBeamSearch && p.Stop.Count > 0) throw new ArgumentException("stop strings are not supported with beam search (num_beams > 1); use stop_token_ids");
        if (resume is null) return;
        if (p.IsBeamSearch || p.N != 1) throw new ArgumentException("resuming works for one sampled output (n = 1, num_beams = 1)");
        if (p.Seed is null) throw new ArgumentException("resuming needs the seed of the original request");
        int total = prompt.Count + resume.Generated.Count;
        if (resume.Generated.Count >= p.MaxTokens) throw new ArgumentException($"nothing to resume: {resume.Generated.Count} tokens already generated, max_tokens is {p.MaxTokens}");
        if (resume.Cache.TokensSeen > total || resume.Cache.TokensSeen < prompt.Count)
            throw new ArgumentException($"the resume cache holds {resume.Cache.TokensSeen} tokens; expected between the prompt's {prompt.Count} and {total}");
    }

    private IEnumerable<GenerationChunk> Sample(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel, GenerationResume? resume)
    {
        var c = model.Config;
        var chain = SamplerChain.Build(p, c.EosIds);
        var candidates = new TokenCandidates(c.VocabSize);
        var generated = resume?.Generated ?? [];
        var outputs = new List<Output>();
        try
        {
            // Prefill: the prompt (and, when resuming, what the cache lacks of the output so far).
            var sw = Stopwatch.StartNew();
            var first = new Output(resume?.Index ?? 0, resume?.Cache ?? model.CreateCache(Math.Min(prompt.Count + p.MaxTokens, c.MaxPositions)), ownsCache: resume is null,
                new SamplingState(c.VocabSize, prompt, p.Seed!.Value, resume?.Index ?? 0),
                new OutputText(tokenizer, prompt, p.Stop), c.VocabSize);
            outputs.Add(first);
            int[] all = [.. prompt, .. generated];
            if (first.Cache.TokensSeen == all.Length) first.Cache.Truncate(all.Length - 1); // re-run the last token for its logits
            model.Forward(all.AsSpan(first.Cache.TokensSeen), first.Cache, first.Logits);
            foreach (var id in generated)
            {
                first.Text.Push(id, canStop: first.State.Step >= p.MinTokens, out _); // already streamed: replay only the state
                first.State.Accept(id);
            }
            first.Elapsed = sw.Elapsed;
            for (int j = 1; j < p.N; j++) outputs.Add(first.Fork(j, p, tokenizer, prompt));

            while (outputs.Any(o => !o.Done))
            {
                foreach (var o in outputs)
                {
                    if (o.Done) continue;
                    if (cancel.IsCancellationRequested)
                    {
                        o.Done = true;
                        yield return new GenerationChunk(o.Index, null, o.Text.Flush(), null, FinishReason.Abort, TimeSpan.Zero);
                        continue;
                    }
                    sw.Restart();
                    int step = o.State.Step;
                    int id = chain.Sample(o.Logits, candidates, o.State);
                    var logprobs = p.Logprobs is int top ? TokenLogprobs.Compute(o.Logits, id, top) : null;
                    o.State.Accept(id);
                    var (text, finish) = Settle(o, id, step, p, prompt.Count);
                    o.Done = finish is not null;
                    yield return new GenerationChunk(o.Index, id, text, logprobs, finish, o.Elapsed + sw.Elapsed);
                    if (o.Done) continue;
                    sw.Restart();
                    model.Forward([id], o.Cache, o.Logits);
                    o.Elapsed = sw.Elapsed;
                }
            }
        }
        finally
        {
            foreach (var o in outputs) if (o.OwnsCache) o.Cache.Dispose();
        }
    }

    /// <summary>The text token <paramref name="id"/> releases and whether it ends the output. EOS and
    /// stop token ids end it without adding text; min_tokens holds every ending off.</summary>
    private (string Text, FinishReason? Finish) Settle(Output o, int id, int step, SamplingParameters p, int promptLength)
    {
        bool mayEnd = step >= p.MinTokens;
        if (mayEnd && !p.IgnoreEos && model.Config.EosIds.Contains(id)) return (o.Text.Flush(), FinishReason.Eos);
        if (mayEnd && p.StopTokenIds.Contains(id)) return (o.Text.Flush(), FinishReason.Stop);
        var text = o.Text.Push(id, mayEnd, out bool stopped);
        if (stopped) return (text, FinishReason.Stop);
        if (o.State.Step >= p.MaxTokens || promptLength + o.State.Step >= model.Config.MaxPositions) return (text + o.Text.Flush(), FinishReason.Length);
        return (text, null);
    }

    /// <summary>One output in progress: its KV cache, the logits of its next token, and its state.</summary>
    private sealed class Output(int index, SequenceKvCache cache, bool ownsCache, SamplingState state, OutputText text, int vocab)
    {
        public int Index { get; } = index;
        public SequenceKvCache Cache { get; } = cache;
        public bool OwnsCache { get; } = ownsCache;
        public SamplingState State { get; } = state;
        public OutputText Text { get; } = text;
        public float[] Logits { get; } = new float[vocab];
        public TimeSpan Elapsed { get; set; }
        public bool Done { get; set; }

        /// <summary>Another output from the same prompt: a copy of the prompt's KV and logits, its own random stream.</summary>
        public Output Fork(int index, SamplingParameters p, ITokenizer? tokenizer, IReadOnlyList<int> prompt)
        {
            var copy = new Output(index, Cache.Clone(p.MaxTokens), ownsCache: true,
                new SamplingState(Logits.Length, prompt, p.Seed!.Value, index), new OutputText(tokenizer, prompt, p.Stop), Logits.Length)
            {
                Elapsed = Elapsed,
            };
            Logits.CopyTo(copy.Logits, 0);
            return copy;
        }
    }
}
