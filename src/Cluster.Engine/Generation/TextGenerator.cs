using System.Diagnostics;
using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;
using Cluster.Engine.Scheduling;
using System.Threading.Channels;

namespace Cluster.Engine.Generation;

/// <summary>
/// One request on one model in this process: prefill the prompt once, then decode the n outputs
/// through a <see cref="ContinuousBatcher"/> (the decode workers' loop) until each ends (eos, stop,
/// length) or the request is cancelled (abort). The n outputs continue copies of the prompt's KV cache
/// rather than recomputing it. Beam search (num_beams &gt; 1) goes to <see cref="BeamSearch"/>.
/// Not thread-safe, like the model: nothing else may run it while a generation is being read.
/// </summary>
public sealed class TextGenerator(LlamaModel model, ITokenizer? tokenizer = null)
{
    /// <summary>
    /// Streams the chunks of every output; the outputs of one step come in index order. Throws
    /// <see cref="ArgumentException"/> at once (not on enumeration) for bad parameters or prompt.
    /// </summary>
    /// <param name="resume">Continue a stream from a cache and the tokens it already produced; with
    /// the same seed the rest is the same as in the uninterrupted run.</param>
    /// <param name="policy">KV compression for sampled outputs (dense when not given): the prompt is prefilled
    /// densely, compressed to the budget at once, and each step then evicts as the cache grows (what the
    /// cluster does on ingest). A resumed cache keeps the policy it has.</param>
    public IEnumerable<GenerationChunk> Generate(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel = default, GenerationResume? resume = null, KvCompressionPolicy? policy = null)
    {
        Validate(prompt, p, resume);
        // Beams are copies of one dense cache, compared every step.
        if (policy is not null and not DensePolicy && p.IsBeamSearch) throw new ArgumentException("KV compression policies are not supported with beam search");
        p = p.WithResolvedSeed();
        return p.IsBeamSearch ? new BeamSearch(model, tokenizer, p).Run(prompt, cancel) : Sample(prompt, p, cancel, resume, policy ?? DensePolicy.Default);
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

    private IEnumerable<GenerationChunk> Sample(IReadOnlyList<int> prompt, SamplingParameters p, CancellationToken cancel, GenerationResume? resume, KvCompressionPolicy policy)
    {
        var c = model.Config;
        var generated = resume?.Generated ?? [];
        var outputs = new List<SequenceGeneration>();
        ContinuousBatcher? batcher = null;
        try
        {
            // Prefill: the prompt (and, when resuming, what the cache lacks of the output so far).
            var sw = Stopwatch.StartNew();
            var cache = resume?.Cache ?? model.CreateCache(Math.Min(prompt.Count + p.MaxTokens, c.MaxPositions));
            var first = new SequenceGeneration(c, p, tokenizer, prompt, cache, resume?.Index ?? 0, ownsCache: resume is null);
            outputs.Add(first);
            int[] all = [.. prompt, .. generated];
            if (cache.TokensSeen == all.Length) cache.Truncate(all.Length - 1); // re-run the last token for its logits
            KvRoom.Forward(model, all.AsSpan(cache.TokensSeen), cache, first.Logits);
            if (resume is null)
            {
                cache.Policy = policy;
                policy.Compress(model, cache);
            }
            foreach (var id in generated) // already streamed: replay only the state
                if (first.Replay(id) is { } ended) throw new ArgumentException($"nothing to resume: the output ended ({ended}) with the tokens already generated");
            for (int j = 1; j < p.N; j++) outputs.Add(first.Fork(j, tokenizer, prompt));
            var prefill = sw.Elapsed;

            // Decode: the outputs run as one continuous batch, the loop a decode worker runs, so a local
            // run and the cluster step the same way. The batch owns (and frees) the outputs from here.
            batcher = new ContinuousBatcher(model, Math.Min(outputs.Count, model.MaxChunk));
            var streams = new List<ChannelReader<GenerationChunk>>(outputs.Count);
            foreach (var o in outputs) streams.Add(batcher.Add(o, [], cancel));
            outputs.Clear();
            // Every output yields one chunk per step until its last, so taking them in turn keeps each
            // step's chunks in index order.
            for (bool firstStep = true; streams.Count > 0; firstStep = false)
                for (int i = 0; i < streams.Count;)
                {
                    var chunk = ReadNext(streams[i]);
                    yield return firstStep ? chunk with { Elapsed = prefill + chunk.Elapsed } : chunk;
                    if (chunk.Finish is not null) streams.RemoveAt(i);
                    else i++;
                }
        }
        finally
        {
            batcher?.Dispose(); // aborts and frees what a consumer that stopped early left running
            foreach (var o in outputs) o.Dispose();
        }
    }

    /// <summary>The stream's next chunk, waiting for the batch; rethrows what ended the stream.</summary>
    private static GenerationChunk ReadNext(ChannelReader<GenerationChunk> stream)
    {
        GenerationChunk? chunk;
        while (!stream.TryRead(out chunk))
            if (!stream.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
            {
                stream.Completion.GetAwaiter().GetResult();
                throw new InvalidOperationException("an output ended without its last chunk");
            }
        return chunk;
    }
}
