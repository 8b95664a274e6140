using System.Text.Json;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Reads a Hugging Face tokenizer.json with a BPE model (huggingface.co/docs/tokenizers/api: normalizers,
/// pre-tokenizers, models, decoders) plus tokenizer_config.json beside it (bos_token, eos_token,
/// add_bos_token, chat_template). Supported shapes: byte-level (GPT-2, Phi-2, Llama 3, Qwen2, SmolLM2:
/// ByteLevel pre-tokenizer, optionally after a Split with the Llama 3 / Qwen2 regex) and SentencePiece-style
/// (Llama 2: Prepend + Replace normalizers; Mistral: Metaspace pre-tokenizer).
/// </summary>
public static class HfTokenizerJson
{
    private const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <exception cref="NotSupportedException">A model other than BPE, or a normalizer / pre-tokenizer not listed above.</exception>
    public static HfBpeTokenizer Load(string tokenizerJsonPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJsonPath));
        var root = doc.RootElement;
        var configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, "tokenizer_config.json");
        using var configDoc = File.Exists(configPath) ? JsonDocument.Parse(File.ReadAllBytes(configPath)) : null;

        var model = root.GetProperty("model");
        var type = Str(model, "type") ?? "BPE"; // the 2020-era GPT-2 file has no "type": BPE is the default
        if (type != "BPE") throw new NotSupportedException($"{tokenizerJsonPath}: model type {type} (only BPE is supported)");
        if (!string.IsNullOrEmpty(Str(model, "continuing_subword_prefix")) || !string.IsNullOrEmpty(Str(model, "end_of_word_suffix")))
            throw new NotSupportedException($"{tokenizerJsonPath}: BPE subword prefix/suffix");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.GetProperty("vocab").EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var merges = new List<(string, string)>();
        foreach (var m in model.GetProperty("merges").EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.Array) merges.Add((m[0].GetString()!, m[1].GetString()!));
            else
            {
                var s = m.GetString()!;
                var space = s.IndexOf(' ', 1); // "a b"; a token never holds a plain space in these models
                if (space < 0) throw new InvalidDataException($"{tokenizerJsonPath}: merge '{s}' is not a pair");
                merges.Add((s[..space], s[(space + 1)..]));
            }
        }
        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var addedJson))
            foreach (var a in addedJson.EnumerateArray())
                added.Add(new AddedToken(a.GetProperty("id").GetInt32(), a.GetProperty("content").GetString()!, Bool(a, "special"),
                    Bool(a, "single_word"), Bool(a, "lstrip"), Bool(a, "rstrip")));

        var pipeline = new Pipeline();
        pipeline.Normalizer(root.TryGetProperty("normalizer", out var n) ? n : default, tokenizerJsonPath);
        pipeline.PreTokenizer(root.TryGetProperty("pre_tokenizer", out var pt) ? pt : default, tokenizerJsonPath);
        pipeline.Decoder(root.TryGetProperty("decoder", out var d) ? d : default);

        var config = configDoc?.RootElement;
        var (bos, eos) = SpecialIds(config, vocab, added, TemplateBos(root));
        return new HfBpeTokenizer(new HfBpeConfig
        {
            Vocab = vocab,
            Merges = merges,
            AddedTokens = added,
            ByteLevel = pipeline.ByteLevel,
            Split = pipeline.Split,
            SplitDigits = pipeline.SplitDigits,
            Nfc = pipeline.Nfc,
            AddPrefixSpace = pipeline.AddPrefixSpace,
            SpacePrefix = pipeline.SpacePrefix,
            StripLeadingSpace = pipeline.StripLeadingSpace,
            ByteFallback = Bool(model, "byte_fallback"),
            FuseUnk = Bool(model, "fuse_unk"),
            IgnoreMerges = Bool(model, "ignore_merges"),
            UnkToken = Str(model, "unk_token"),
            BosId = bos,
            EosId = eos,
            ChatTemplate = ChatTemplate(config),
        });
    }

    /// <summary>BOS is the token that encoding with special tokens puts first: the config's bos_token when its
    /// add_bos_token is true, else the post-processor template's first special token; -1 when neither (GPT-2,
    /// Phi-2, Qwen2). EOS is the config's eos_token, else a conventional end token among the added tokens.</summary>
    internal static (int Bos, int Eos) SpecialIds(JsonElement? config, Dictionary<string, int> vocab, List<AddedToken> added, string? templateBos)
    {
        int TokenId(string? content) => content is null ? -1
            : added.FirstOrDefault(t => t.Content == content)?.Id ?? vocab.GetValueOrDefault(content, -1);
        var addBos = config is { } c && c.TryGetProperty("add_bos_token", out var a) && a.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? a.GetBoolean() : (bool?)null;
        var bos = addBos switch
        {
            true => TokenId(SpecialTokenContent(config, "bos_token") ?? templateBos),
            false => -1,
            null => TokenId(templateBos),
        };
        var eos = TokenId(SpecialTokenContent(config, "eos_token")
            ?? added.FirstOrDefault(t => t.Content is "</s>" or "<|endoftext|>" or "<|end_of_text|>")?.Content);
        return (bos, eos);
    }

    /// <summary>tokenizer_config.json's chat_template: a Jinja string, or a list of {name, template} of which
    /// the one named "default" (else the first) is returned.</summary>
    internal static string? ChatTemplate(JsonElement? config)
    {
        if (config is not { } c || !c.TryGetProperty("chat_template", out var t)) return null;
        if (t.ValueKind == JsonValueKind.String) return t.GetString();
        if (t.ValueKind != JsonValueKind.Array) return null;
        var named = t.EnumerateArray().ToList();
        var chosen = named.FirstOrDefault(e => Str(e, "name") == "default");
        return Str(chosen.ValueKind == JsonValueKind.Object ? chosen : named.FirstOrDefault(), "template");
    }

    /// <summary>The parts of the normalizer / pre-tokenizer / decoder chain that change ids or bytes.</summary>
    private sealed class Pipeline
    {
        public bool ByteLevel, AddPrefixSpace, StripLeadingSpace, SplitDigits, Nfc;
        public ByteLevelSplit Split = ByteLevelSplit.None;
        public SpacePrefix SpacePrefix = SpacePrefix.None;

        public void Normalizer(JsonElement n, string path)
        {
            if (n.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return;
            switch (Str(n, "type"))
            {
                case "Sequence":
                    foreach (var item in n.GetProperty("normalizers").EnumerateArray()) Normalizer(item, path);
                    break;
                case "NFC":
                    Nfc = true;
                    break;
                case "Prepend" when Str(n, "prepend") == "\u2581":
                    SpacePrefix = SpacePrefix.EverySegment;
                    break;
                case "Replace" when n.GetProperty("pattern").TryGetProperty("String", out var s) && s.GetString() == " " && Str(n, "content") == "\u2581":
                    if (SpacePrefix == SpacePrefix.None) SpacePrefix = SpacePrefix.Never;
                    break;
                default:
                    throw new NotSupportedException($"{path}: normalizer {n}");
            }
        }

        public void PreTokenizer(JsonElement p, string path)
        {
            if (p.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return;
            switch (Str(p, "type"))
            {
                case "Sequence":
                    foreach (var item in p.GetProperty("pretokenizers").EnumerateArray()) PreTokenizer(item, path);
                    break;
                case "ByteLevel":
                    ByteLevel = true;
                    AddPrefixSpace = Bool(p, "add_prefix_space");
                    // use_regex (default true) applies GPT-2's regex; after a Split it is normally false.
                    if (!p.TryGetProperty("use_regex", out var r) || r.ValueKind == JsonValueKind.True) Split = ByteLevelSplit.Gpt2;
                    break;
                case "Split":
                    var regex = p.GetProperty("pattern").TryGetProperty("Regex", out var re) ? re.GetString() : null;
                    Split = regex switch
                    {
                        Llama3Regex => ByteLevelSplit.Llama3,
                        Qwen2Regex => ByteLevelSplit.Qwen2,
                        _ => throw new NotSupportedException($"{path}: Split pattern {regex}"),
                    };
                    break;
                case "Digits" when Bool(p, "individual_digits"):
                    SplitDigits = true;
                    break;
                case "Metaspace":
                    SpacePrefix = Str(p, "prepend_scheme") switch
                    {
                        "first" => SpacePrefix.First,
                        "never" => SpacePrefix.Never,
                        "always" => SpacePrefix.Always,
                        // older files: add_prefix_space true/false
                        _ => Bool(p, "add_prefix_space", true) ? SpacePrefix.Always : SpacePrefix.Never,
                    };
                    if (Bool(p, "split")) throw new NotSupportedException($"{path}: Metaspace split=true");
                    break;
                default:
                    throw new NotSupportedException($"{path}: pre_tokenizer {p}");
            }
        }

        public void Decoder(JsonElement d)
        {
            if (d.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return;
            switch (Str(d, "type"))
            {
                case "Sequence":
                    foreach (var item in d.GetProperty("decoders").EnumerateArray()) Decoder(item);
                    break;
                case "Strip" when Str(d, "content") == " " && d.TryGetProperty("start", out var start) && start.GetInt32() > 0:
                case "Metaspace" when Str(d, "prepend_scheme") != "never":
                    StripLeadingSpace = true;
                    break;
            }
        }
    }

    /// <summary>bos_token in tokenizer_config.json is a string or an AddedToken object {"content": ...}.</summary>
    internal static string? SpecialTokenContent(JsonElement? config, string name)
    {
        if (config is not { } c || !c.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object => Str(v, "content"),
            _ => null,
        };
    }

    /// <summary>The special token a TemplateProcessing post-processor puts first ("&lt;s&gt;" $A), if any.</summary>
    private static string? TemplateBos(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var pp) || pp.ValueKind != JsonValueKind.Object || Str(pp, "type") != "TemplateProcessing") return null;
        var first = pp.GetProperty("single")[0];
        return first.TryGetProperty("SpecialToken", out var st) ? Str(st, "id") : null;
    }

    internal static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    internal static bool Bool(JsonElement e, string name, bool fallback = false) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
}
