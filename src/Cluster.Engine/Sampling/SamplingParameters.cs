namespace Cluster.Engine.Sampling;

/// <summary>
/// Everything a client can ask of decoding, as in the OpenAI completions API plus vLLM's extensions
/// (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ignore_eos, beam search). One type
/// for llmctl, the engine and (later) the gRPC API, so a value means the same thing everywhere.
/// Defaults are the OpenAI/vLLM ones: every control is off unless set.
/// </summary>
public sealed record SamplingParameters
{
    /// <summary>Divides the logits before the filters; 0 means greedy (argmax).</summary>
    public float Temperature { get; init; } = 1f;

    /// <summary>Keep the k most likely tokens; 0 = off.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probability sums to at least top_p (Holtzman et al. 2019); 1 = off.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Keep tokens whose probability is at least min_p times the most likely one's; 0 = off.</summary>
    public float MinP { get; init; }

    /// <summary>OpenAI: subtracted once from the logit of every token already generated.</summary>
    public float PresencePenalty { get; init; }

    /// <summary>OpenAI: subtracted from a token's logit once per time it was generated.</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>CTRL / Hugging Face: over prompt and generated tokens, positive logits are divided by it and negative ones multiplied; 1 = off.</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>Token id -> value added to its raw logit (OpenAI logit_bias, -100..100).</summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();

    /// <summary>Most tokens to generate per output.</summary>
    public int MaxTokens { get; init; } = 16;

    /// <summary>Tokens to generate before EOS, a stop token id or a stop string may end the output.</summary>
    public int MinTokens { get; init; }

    /// <summary>Strings that end the output when they appear in its text; they are not included.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Token ids that end the output (finish reason stop), besides EOS.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Keep generating after EOS.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>With a seed the draw at step i depends only on (seed, output index, i); null = a fresh seed per request.</summary>
    public long? Seed { get; init; }

    /// <summary>Report the chosen token's log-probability and this many top alternatives (0..20); null = none.</summary>
    public int? Logprobs { get; init; }

    /// <summary>Outputs to return for the prompt (samples, or the best beams with beam search).</summary>
    public int N { get; init; } = 1;

    /// <summary>Outputs to sample when more than <see cref="N"/>: the N with the highest cumulative logprob
    /// are returned (OpenAI's and vLLM's best_of); null = N. Served by the cluster's gateway, which sees
    /// every output; sampling only.</summary>
    public int? BestOf { get; init; }

    /// <summary>Outputs to sample: best_of, or n.</summary>
    public int Outputs => BestOf ?? N;

    /// <summary>Beams kept per step; 1 = no beam search.</summary>
    public int NumBeams { get; init; } = 1;

    /// <summary>Beam score = sum of logprobs / length^length_penalty (Hugging Face); &gt; 0 favours longer outputs.</summary>
    public float LengthPenalty { get; init; } = 1f;

    /// <summary>Beam search ends as soon as num_beams outputs are finished; otherwise only when no live beam can still beat them.</summary>
    public bool EarlyStopping { get; init; }

    /// <summary>Most outputs (n, best_of) or beams of one request: each holds its own KV cache and logits,
    /// so without a bound one request could exhaust a worker (`n: 2147483647` did, found by the front-door fuzz test).</summary>
    public const int MaxOutputs = 128;

    public bool IsGreedy => Temperature == 0f;
    public bool IsBeamSearch => NumBeams > 1;

    /// <summary>
    /// Throws <see cref="ArgumentException"/> naming the first bad value. <paramref name="name"/> turns
    /// the API name (snake_case) into the caller's spelling, e.g. "--top-p" for the command line.
    /// </summary>
    public void Validate(int vocabSize, Func<string, string>? name = null)
    {
        name ??= n => n;
        void Check(bool ok, string parameter, string rule, object value)
        {
            if (!ok) throw new ArgumentException($"{name(parameter)} {rule}, got {value}");
        }
        Check(float.IsFinite(Temperature) && Temperature >= 0, "temperature", "must be >= 0 (0 = greedy)", Temperature);
        Check(TopK >= 0, "top_k", "must be >= 0 (0 = off)", TopK);
        Check(TopP > 0 && TopP <= 1, "top_p", "must be in (0, 1]", TopP);
        Check(MinP >= 0 && MinP <= 1, "min_p", "must be in [0, 1]", MinP);
        Check(PresencePenalty >= -2 && PresencePenalty <= 2, "presence_penalty", "must be in [-2, 2]", PresencePenalty);
        Check(FrequencyPenalty >= -2 && FrequencyPenalty <= 2, "frequency_penalty", "must be in [-2, 2]", FrequencyPenalty);
        Check(float.IsFinite(RepetitionPenalty) && RepetitionPenalty > 0, "repetition_penalty", "must be > 0 (1 = off)", RepetitionPenalty);
        foreach (var (id, bias) in LogitBias)
        {
            Check(id >= 0 && id < vocabSize, "logit_bias", $"token ids must be in [0, {vocabSize})", id);
            Check(bias >= -100 && bias <= 100, "logit_bias", $"values must be in [-100, 100] (token {id})", bias);
        }
        Check(MaxTokens >= 1, "max_tokens", "must be >= 1", MaxTokens);
        Check(MinTokens >= 0 && MinTokens <= MaxTokens, "min_tokens", $"must be in [0, max_tokens={MaxTokens}]", MinTokens);
        foreach (var s in Stop) Check(!string.IsNullOrEmpty(s), "stop", "strings must not be empty", "\"\"");
        foreach (var id in StopTokenIds) Check(id >= 0 && id < vocabSize, "stop_token_ids", $"must be in [0, {vocabSize})", id);
        Check(Logprobs is null || Logprobs is >= 0 and <= 20, "logprobs", "must be in [0, 20]", Logprobs!);
        Check(N >= 1 && N <= MaxOutputs, "n", $"must be in [1, {MaxOutputs}]", N);
        Check(NumBeams >= 1 && NumBeams <= MaxOutputs, "num_beams", $"must be in [1, {MaxOutputs}] (1 = no beam search)", NumBeams);
        Check(NumBeams == 1 || N <= NumBeams, "n", $"must be <= num_beams={NumBeams} with beam search", N);
        Check(BestOf is null || BestOf >= N && BestOf <= MaxOutputs, "best_of", $"must be in [n={N}, {MaxOutputs}]", BestOf!);
        Check(BestOf is null || BestOf == N || NumBeams == 1, "best_of", $"is not used with beam search (num_beams={NumBeams} is the width; leave best_of unset)", BestOf!);
        // The search tracks no text per beam, so a stop string could not end a hypothesis.
        Check(NumBeams == 1 || Stop.Count == 0, "stop", "strings are not supported with beam search (num_beams > 1); use stop_token_ids", $"{Stop.Count} strings");
        Check(float.IsFinite(LengthPenalty), "length_penalty", "must be a finite number", LengthPenalty);
    }

    /// <summary>These parameters with a concrete seed (a fresh one if none was given), so that the
    /// output can be reproduced or a stream resumed elsewhere.</summary>
    public SamplingParameters WithResolvedSeed() => Seed is null ? this with { Seed = Random.Shared.NextInt64() } : this;
}
