using System.CommandLine;
using System.Globalization;
using Cluster.Engine.Sampling;

namespace LlmCtl;

/// <summary>The command-line spelling of <see cref="SamplingParameters"/>: one option per parameter,
/// validated by the parameters type itself so the CLI and the API reject the same values.</summary>
internal sealed class SamplingOptions
{
    private readonly Option<int> _maxTokens = new("--max-tokens") { Description = "most tokens to generate per output", DefaultValueFactory = _ => 256 };
    private readonly Option<float> _temperature = new("--temperature") { Description = "softmax temperature; 0 = greedy (the default here; the API's default is 1)", DefaultValueFactory = _ => 0f };
    private readonly Option<int> _topK = new("--top-k") { Description = "keep the k most likely tokens (0 = off)" };
    private readonly Option<float> _topP = new("--top-p") { Description = "nucleus: keep the most likely tokens up to this total probability (1 = off)", DefaultValueFactory = _ => 1f };
    private readonly Option<float> _minP = new("--min-p") { Description = "keep tokens at least this fraction as likely as the top one (0 = off)" };
    private readonly Option<float> _presence = new("--presence-penalty") { Description = "OpenAI presence penalty, -2..2, over generated tokens" };
    private readonly Option<float> _frequency = new("--frequency-penalty") { Description = "OpenAI frequency penalty, -2..2, over generated tokens" };
    private readonly Option<float> _repetition = new("--repetition-penalty") { Description = "CTRL/Hugging Face repetition penalty over prompt and output (1 = off)", DefaultValueFactory = _ => 1f };
    private readonly Option<string[]> _logitBias = new("--logit-bias") { Description = "ID=BIAS added to a token's logit, -100..100 (repeatable)" };
    private readonly Option<int> _minTokens = new("--min-tokens") { Description = "tokens to generate before EOS, a stop token or a stop string may end the output" };
    private readonly Option<string[]> _stop = new("--stop") { Description = "stop string, not included in the output (repeatable)" };
    private readonly Option<int[]> _stopTokenIds = new("--stop-token-id") { Description = "token id that ends the output (repeatable)" };
    private readonly Option<bool> _ignoreEos = new("--ignore-eos") { Description = "keep generating after the end-of-sequence token" };
    private readonly Option<long?> _seed = new("--seed") { Description = "random seed: the same seed gives the same output (default: a fresh one, printed)" };
    private readonly Option<int?> _logprobs = new("--logprobs") { Description = "report the chosen token's logprob and the N most likely alternatives (0..20)" };
    private readonly Option<int> _n = new("--n") { Description = "outputs to generate from the prompt (they share its KV)", DefaultValueFactory = _ => 1 };
    private readonly Option<int?> _bestOf = new("--best-of") { Description = "with --endpoint: sample this many outputs and return the --n with the highest cumulative logprob" };
    private readonly Option<int> _numBeams = new("--num-beams") { Description = "beam search width (1 = no beam search)", DefaultValueFactory = _ => 1 };
    private readonly Option<float> _lengthPenalty = new("--length-penalty") { Description = "beam score = sum logprobs / length^this", DefaultValueFactory = _ => 1f };
    private readonly Option<bool> _earlyStopping = new("--early-stopping") { Description = "end beam search as soon as num-beams outputs are finished" };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { _maxTokens, _temperature, _topK, _topP, _minP, _presence, _frequency, _repetition, _logitBias, _minTokens,
                     _stop, _stopTokenIds, _ignoreEos, _seed, _logprobs, _n, _bestOf, _numBeams, _lengthPenalty, _earlyStopping })
            cmd.Options.Add(o);
    }

    /// <summary>The parameters given, validated against <paramref name="vocabSize"/>; throws
    /// <see cref="ArgumentException"/> naming the option.</summary>
    public SamplingParameters Read(ParseResult r, int vocabSize)
    {
        var p = new SamplingParameters
        {
            MaxTokens = r.GetValue(_maxTokens),
            Temperature = r.GetValue(_temperature),
            TopK = r.GetValue(_topK),
            TopP = r.GetValue(_topP),
            MinP = r.GetValue(_minP),
            PresencePenalty = r.GetValue(_presence),
            FrequencyPenalty = r.GetValue(_frequency),
            RepetitionPenalty = r.GetValue(_repetition),
            LogitBias = ParseLogitBias(r.GetValue(_logitBias) ?? []),
            MinTokens = r.GetValue(_minTokens),
            Stop = r.GetValue(_stop) ?? [],
            StopTokenIds = r.GetValue(_stopTokenIds) ?? [],
            IgnoreEos = r.GetValue(_ignoreEos),
            Seed = r.GetValue(_seed),
            Logprobs = r.GetValue(_logprobs),
            N = r.GetValue(_n),
            BestOf = r.GetValue(_bestOf),
            NumBeams = r.GetValue(_numBeams),
            LengthPenalty = r.GetValue(_lengthPenalty),
            EarlyStopping = r.GetValue(_earlyStopping),
        };
        p.Validate(vocabSize, OptionName);
        return p;
    }

    /// <summary>The option that sets an API parameter, for error messages.</summary>
    private static string OptionName(string parameter) => parameter switch
    {
        "stop_token_ids" => "--stop-token-id",
        _ => "--" + parameter.Replace('_', '-'),
    };

    private static Dictionary<int, float> ParseLogitBias(string[] entries)
    {
        var bias = new Dictionary<int, float>();
        foreach (var e in entries)
        {
            var parts = e.Split('=');
            if (parts.Length != 2 || !int.TryParse(parts[0], CultureInfo.InvariantCulture, out var id)
                || !float.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
                throw new ArgumentException($"--logit-bias expects ID=BIAS (e.g. 13=-100), got '{e}'");
            bias[id] = value;
        }
        return bias;
    }
}
