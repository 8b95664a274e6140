using System.Text.Json;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Reads the "slow" Hugging Face byte-level BPE files of a model folder that has no tokenizer.json
/// (Qwen2.5's, GPT-2's): vocab.json (token to id), merges.txt (one "a b" pair a line in rank order,
/// after an optional "#version" line) and tokenizer_config.json (added_tokens_decoder, bos/eos,
/// add_prefix_space, tokenizer_class, chat_template). The split regex follows tokenizer_class, as
/// transformers' Qwen2Tokenizer and GPT2Tokenizer hard-code it.
/// </summary>
public static class HfVocabMergesFiles
{
    /// <summary>True when <paramref name="folder"/> holds vocab.json and merges.txt.</summary>
    public static bool Present(string folder) =>
        File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt"));

    public static HfBpeTokenizer Load(string folder)
    {
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(Path.Combine(folder, "vocab.json")))
            ?? throw new InvalidDataException($"{folder}/vocab.json: not a JSON object");
        vocab = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        var merges = new List<(string, string)>();
        foreach (var line in File.ReadLines(Path.Combine(folder, "merges.txt")))
        {
            if (line.Length == 0 || (merges.Count == 0 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            var space = line.IndexOf(' ', 1);
            if (space < 0) throw new InvalidDataException($"{folder}/merges.txt: '{line}' is not a pair");
            merges.Add((line[..space], line[(space + 1)..]));
        }

        var configPath = Path.Combine(folder, "tokenizer_config.json");
        using var configDoc = File.Exists(configPath) ? JsonDocument.Parse(File.ReadAllBytes(configPath)) : null;
        var config = configDoc?.RootElement;
        var added = new List<AddedToken>();
        if (config is { } c && c.TryGetProperty("added_tokens_decoder", out var decoder))
        {
            foreach (var p in decoder.EnumerateObject())
            {
                var t = p.Value;
                added.Add(new AddedToken(int.Parse(p.Name), HfTokenizerJson.Str(t, "content")!, HfTokenizerJson.Bool(t, "special"),
                    HfTokenizerJson.Bool(t, "single_word"), HfTokenizerJson.Bool(t, "lstrip"), HfTokenizerJson.Bool(t, "rstrip")));
            }
        }
        var tokenizerClass = config is { } cc ? HfTokenizerJson.Str(cc, "tokenizer_class") : null;
        var (bos, eos) = HfTokenizerJson.SpecialIds(config, vocab, added, templateBos: null);
        return new HfBpeTokenizer(new HfBpeConfig
        {
            Vocab = vocab,
            Merges = merges,
            AddedTokens = added,
            ByteLevel = true,
            Split = tokenizerClass is "Qwen2Tokenizer" or "Qwen2TokenizerFast" ? ByteLevelSplit.Qwen2 : ByteLevelSplit.Gpt2,
            AddPrefixSpace = config is { } ap && HfTokenizerJson.Bool(ap, "add_prefix_space"),
            BosId = bos,
            EosId = eos,
            ChatTemplate = HfTokenizerJson.ChatTemplate(config),
        });
    }
}
