namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Builds a tokenizer from a GGUF file's tokenizer.ggml.* metadata (llama.cpp gguf-py constants):
/// model "llama" is SentencePiece BPE over tokens/scores/token_type, merged as llama.cpp's
/// llm_tokenizer_spm does (into any token, by score); model "gpt2" is byte-level BPE over tokens and
/// merges ("a b", rank order) with the split regex named by tokenizer.ggml.pre.
/// </summary>
public static class GgufTokenizer
{
    /// <exception cref="InvalidDataException">No tokenizer.ggml.tokens.</exception>
    /// <exception cref="NotSupportedException">A tokenizer.ggml.model other than llama or gpt2.</exception>
    public static ITokenizer Load(string path) => FromMetadata(GgufMetadata.Read(path), path);

    public static ITokenizer FromMetadata(GgufMetadata meta, string name)
    {
        var tokens = meta.Get<string[]>("tokenizer.ggml.tokens") ?? throw new InvalidDataException($"{name}: no tokenizer.ggml.tokens");
        var model = meta.Get<string>("tokenizer.ggml.model") ?? "llama";
        var types = meta.Get<int[]>("tokenizer.ggml.token_type");
        var bos = (int)meta.GetInteger("tokenizer.ggml.bos_token_id", -1);
        var eos = (int)meta.GetInteger("tokenizer.ggml.eos_token_id", -1);
        var unk = (int)meta.GetInteger("tokenizer.ggml.unknown_token_id", -1);
        // Without the key, SentencePiece vocabularies (Llama) start with BOS and byte-level ones (GPT-2) do not.
        if (!meta.GetBool("tokenizer.ggml.add_bos_token", model == "llama")) bos = -1;
        var kinds = new PieceKind[tokens.Length];
        for (var i = 0; i < tokens.Length; i++)
            kinds[i] = types is not null && i < types.Length && types[i] is >= 1 and <= 6 ? (PieceKind)types[i] : PieceKind.Normal;

        switch (model)
        {
            case "llama":
                var scores = meta.Get<float[]>("tokenizer.ggml.scores") ?? new float[tokens.Length];
                var vocab = new SentencePieceVocab(tokens, scores, kinds, bos, eos, unk);
                return new SentencePieceBpeTokenizer(vocab, new SentencePieceOptions
                {
                    AddDummyPrefix = meta.GetBool("tokenizer.ggml.add_space_prefix", true),
                    MergeIntoAnyPiece = true,
                }, meta.Get<string>("tokenizer.chat_template"));
            case "gpt2":
                var merges = (meta.Get<string[]>("tokenizer.ggml.merges") ?? [])
                    .Select(m =>
                    {
                        var s = m.IndexOf(' ', 1);
                        return s > 0 ? (m[..s], m[(s + 1)..]) : throw new InvalidDataException($"{name}: merge '{m}' is not a pair");
                    }).ToList();
                var map = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
                var added = new List<AddedToken>();
                for (var i = 0; i < tokens.Length; i++)
                {
                    if (kinds[i] is PieceKind.Control or PieceKind.UserDefined) added.Add(new AddedToken(i, tokens[i], kinds[i] == PieceKind.Control));
                    else map.TryAdd(tokens[i], i);
                }
                return new HfBpeTokenizer(new HfBpeConfig
                {
                    Vocab = map,
                    Merges = merges,
                    AddedTokens = added,
                    ByteLevel = true,
                    Split = PreTokenizerSplit(meta.Get<string>("tokenizer.ggml.pre")),
                    BosId = bos,
                    EosId = eos,
                    ChatTemplate = meta.Get<string>("tokenizer.chat_template"),
                });
            default:
                throw new NotSupportedException($"{name}: tokenizer.ggml.model '{model}' (llama and gpt2 are supported)");
        }
    }

    /// <summary>llama.cpp's tokenizer.ggml.pre names (llama-vocab.cpp) for the regexes we implement.</summary>
    private static ByteLevelSplit PreTokenizerSplit(string? pre) => pre switch
    {
        "llama3" or "llama-bpe" or "llama-v3" or "smaug-bpe" => ByteLevelSplit.Llama3,
        "qwen2" => ByteLevelSplit.Qwen2,
        null or "default" or "gpt-2" or "gpt2" or "phi-2" => ByteLevelSplit.Gpt2,
        _ => throw new NotSupportedException($"tokenizer.ggml.pre '{pre}'"),
    };
}
