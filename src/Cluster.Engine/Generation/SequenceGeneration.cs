using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Generation;

/// <summary>
/// One output in progress, advanced one token at a time by whoever runs the model: the local
/// <see cref="TextGenerator"/> for one request, or a decode worker's continuous batch for many.
/// Both use this type, so a stream is the same token for token wherever it runs. It holds the
/// output's KV cache, the logits of its next token, its sampling state and its text.
/// </summary>
public sealed class SequenceGeneration : IDisposable
{
    private readonly LlamaConfig _config;
    private readonly SamplingParameters _p;
    private readonly SamplerChain _chain;
    private readonly int _promptLength;
    private readonly bool _ownsCache;

    /// <param name="p">Parameters with the seed resolved (<see cref="SamplingParameters.WithResolvedSeed"/>).</param>
    /// <param name="index">Which of the request's n outputs; also its random stream.</param>
    /// <param name="ownsCache">Dispose the cache with this object.</param>
    public SequenceGeneration(LlamaConfig config, SamplingParameters p, ITokenizer? tokenizer, IReadOnlyList<int> prompt, SequenceKvCache cache, int index = 0, bool ownsCache = true)
    {
        if (p.Seed is null) throw new ArgumentException("resolve the seed first (SamplingParameters.WithResolvedSeed)", nameof(p));
        _config = config;
        _p = p;
        _chain = SamplerChain.Build(p, config.EosIds);
        _promptLength = prompt.Count;
        _ownsCache = ownsCache;
        Index = index;
        Cache = cache;
        State = new SamplingState(config.VocabSize, prompt, p.Seed.Value, index);
        Text = new OutputText(tokenizer, prompt, p.Stop);
        Logits = new float[config.VocabSize];
        Candidates = new TokenCandidates(config.VocabSize);
    }

    public int Index { get; }

    /// <summary>The output's KV. A continuous batch that preempts the sequence frees it and later gives it
    /// a recomputed one (<see cref="ReplaceCache"/>): read it after the stream, do not keep the first.</summary>
    public SequenceKvCache Cache { get; private set; }

    /// <summary>Swaps in a recomputed cache after a preemption; the batch has freed the old one. The
    /// sampling state (random stream, penalties, stop state) is untouched, so the tokens do not change.</summary>
    internal void ReplaceCache(SequenceKvCache cache) => Cache = cache;

    /// <summary>Logits of the next token; whoever runs the model writes them before <see cref="Step"/>.</summary>
    public float[] Logits { get; }

    public SamplingState State { get; }
    internal OutputText Text { get; }
    private TokenCandidates Candidates { get; }

    /// <summary>Tokens generated so far.</summary>
    public IReadOnlyList<int> Generated => State.Generated;

    /// <summary>Tokens the sequence may still generate (max_tokens less those it has).</summary>
    public int TokensLeft => Math.Max(0, _p.MaxTokens - State.Step);

    /// <summary>The last sampled token, not yet run through the model (its KV is not in the cache).</summary>
    public int? Pending { get; private set; }

    public bool Done { get; private set; }

    /// <summary>Replays a token that an earlier run already streamed: state and text only, nothing emitted.
    /// Returns why the output ended with it, if it did (its max_tokens reached, EOS, a stop): an earlier run
    /// cut off after its last token but before saying so must not sample one more.</summary>
    public FinishReason? Replay(int id)
    {
        if (Done) throw new InvalidOperationException($"output {Index} has finished");
        int step = State.Step;
        State.Accept(id);
        var (_, finish) = Settle(id, step);
        Done = finish is not null;
        return finish;
    }

    /// <summary>Samples the next token from <see cref="Logits"/> and settles it: its text, and whether it
    /// ends the output. Afterwards <see cref="Pending"/> is the token to run next, unless <see cref="Done"/>.</summary>
    public GenerationChunk Step(TimeSpan elapsed)
    {
        if (Done) throw new InvalidOperationException($"output {Index} has finished");
        int step = State.Step;
        int id = _chain.Sample(Logits, Candidates, State);
        var logprobs = _p.Logprobs is int top ? TokenLogprobs.Compute(Logits, id, top) : null;
        State.Accept(id);
        var (text, finish) = Settle(id, step);
        Done = finish is not null;
        Pending = Done ? null : id;
        return new GenerationChunk(Index, id, text, logprobs, finish, elapsed);
    }

    /// <summary>Ends the output early (client gone, Abort): flushes held-back text.</summary>
    public GenerationChunk Abort()
    {
        Done = true;
        Pending = null;
        return new GenerationChunk(Index, null, Text.Flush(), null, FinishReason.Abort, TimeSpan.Zero);
    }

    /// <summary>The text token <paramref name="id"/> releases and whether it ends the output. EOS and
    /// stop token ids end it without adding text; min_tokens holds every ending off.</summary>
    private (string Text, FinishReason? Finish) Settle(int id, int step)
    {
        bool mayEnd = step >= _p.MinTokens;
        if (mayEnd && !_p.IgnoreEos && _config.EosIds.Contains(id)) return (Text.Flush(), FinishReason.Eos);
        if (mayEnd && _p.StopTokenIds.Contains(id)) return (Text.Flush(), FinishReason.Stop);
        var text = Text.Push(id, mayEnd, out bool stopped);
        if (stopped) return (text, FinishReason.Stop);
        // The sampled token is pending (seen, not yet run): can the sequence take the next one?
        if (State.Step >= _p.MaxTokens || !ContextLimit.Fits(Cache.Policy, _promptLength + State.Step, 1, _config.MaxPositions))
            return (text + Text.Flush(), FinishReason.Length);
        return (text, null);
    }

    /// <summary>Another output of the same prompt: a copy of this one's KV and logits, its own random stream.</summary>
    public SequenceGeneration Fork(int index, ITokenizer? tokenizer, IReadOnlyList<int> prompt)
    {
        var copy = new SequenceGeneration(_config, _p, tokenizer, prompt, Cache.Clone(_p.MaxTokens), index);
        Logits.CopyTo(copy.Logits, 0);
        return copy;
    }

    public void Dispose()
    {
        if (_ownsCache) Cache.Dispose();
    }
}
