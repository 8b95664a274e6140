using System.Text.Json;
using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>
/// The Llama 3, Qwen2 and SmolLM2 tokenizer.json files are too large to ship (SOURCES.md), so their
/// pipelines are rebuilt here around the Qwen2.5 vocab.json/merges.txt and GPT-2's vocabulary, written as
/// tokenizer.json the way those models' files are laid out, and compared with @lenml/tokenizers. This checks
/// the hand-written split regexes and the Digits pre-tokenizer against a real regex engine.
/// </summary>
public sealed class HfSyntheticTokenizerTests : IDisposable
{
    private const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private readonly string _dir = Directory.CreateTempSubdirectory("hf-synthetic").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string> Variants => new() { "qwen2", "llama3", "smollm2" };

    [SharedDataTheory]
    [MemberData(nameof(Variants))]
    public void Matches_transformers_js(string variant)
    {
        var path = Write(variant);
        var tok = HfTokenizerJson.Load(path);
        var texts = new List<string>(StressTexts.All())
        {
            "123 4567 89012 ９８７ 3.14 2024-01-01", "I'M YOU'LL We'Ve 'S", "\r\n\r\n  \n\t\n x", "(word) [word] «word» 😀word",
        };
        texts.AddRange(TokenizerAssert.Lines(SharedData.Path_("corpus", "wikitext2_raw_test.txt")).Take(1500));
        texts.AddRange(TokenizerAssert.Lines(SharedData.Path_("corpus", "pg1342_pride_and_prejudice.txt")).Take(1500));
        var expected = ReferenceJs.Encode(path, texts);
        if (expected is null) return;
        TokenizerAssert.SameIds(texts, expected, t => tok.Encode(t, addBos: false), variant);
        // Special tokens written in the text decode to nothing, so those texts are left out here.
        foreach (var text in StressTexts.All().Where(t => !t.Contains("<|endoftext|>"))) TokenizerAssert.RoundTripsAndStreams(tok, text);
    }

    [SharedDataFact]
    public void Qwen_vocab_and_merges_folder_loads_like_its_tokenizer_json()
    {
        var folder = SharedData.Path_("models", "tokenizers", "qwen2.5-0.5b");
        var slow = TokenizerLoader.Load(folder);
        Assert.IsType<HfBpeTokenizer>(slow);
        Assert.Equal((-1, 151643), (slow.BosId, slow.EosId));
        Assert.Contains("<|im_start|>", ((HfBpeTokenizer)slow).ChatTemplate);
        var fast = HfTokenizerJson.Load(Write("qwen2"));
        foreach (var text in StressTexts.Short.Append("<|im_start|>user\nHi<|im_end|>"))
            Assert.Equal(fast.Encode(text, false), slow.Encode(text, false));
        Assert.Equal([151644, 872, 198, 13048, 151645], slow.Encode("<|im_start|>user\nHi<|im_end|>", false));
    }

    /// <summary>Writes a tokenizer.json for <paramref name="variant"/> and returns its path.</summary>
    private string Write(string variant)
    {
        var gpt2 = variant == "smollm2";
        var source = SharedData.Path_("models", "tokenizers", gpt2 ? "gpt2" : "qwen2.5-0.5b");
        Dictionary<string, int> vocab;
        List<string> merges;
        var added = new List<object>();
        if (gpt2)
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(source, "tokenizer.json")));
            var model = doc.RootElement.GetProperty("model");
            vocab = model.GetProperty("vocab").Deserialize<Dictionary<string, int>>()!;
            merges = model.GetProperty("merges").Deserialize<List<string>>()!;
            added.Add(new { id = 50256, content = "<|endoftext|>", single_word = false, lstrip = false, rstrip = false, normalized = false, special = true });
        }
        else
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(Path.Combine(source, "vocab.json")))!;
            merges = File.ReadLines(Path.Combine(source, "merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version")).ToList();
            using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(source, "tokenizer_config.json")));
            foreach (var p in config.RootElement.GetProperty("added_tokens_decoder").EnumerateObject())
                added.Add(new { id = int.Parse(p.Name), content = p.Value.GetProperty("content").GetString(), single_word = false, lstrip = false, rstrip = false, normalized = false, special = p.Value.GetProperty("special").GetBoolean() });
        }
        object split = variant == "smollm2"
            ? new { type = "Digits", individual_digits = true }
            : new { type = "Split", pattern = new { Regex = variant == "qwen2" ? Qwen2Regex : Llama3Regex }, behavior = "Isolated", invert = false };
        var byteLevel = new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = variant == "smollm2" };
        var json = new
        {
            version = "1.0",
            truncation = (object?)null,
            padding = (object?)null,
            added_tokens = added,
            normalizer = (object?)null, // Qwen2's file has NFC here; left out because .NET's invariant mode does not compose
            pre_tokenizer = new { type = "Sequence", pretokenizers = new[] { split, byteLevel } },
            post_processor = byteLevel,
            decoder = byteLevel,
            model = new
            {
                type = "BPE", dropout = (object?)null, unk_token = (object?)null, continuing_subword_prefix = "", end_of_word_suffix = "",
                fuse_unk = false, byte_fallback = false, ignore_merges = variant == "llama3", vocab, merges,
            },
        };
        var folder = Directory.CreateDirectory(Path.Combine(_dir, variant)).FullName;
        var path = Path.Combine(folder, "tokenizer.json");
        File.WriteAllText(path, JsonSerializer.Serialize(json));
        return path;
    }
}
