using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>llama.cpp's own tokenizer vectors for its Llama SPM vocab-only GGUF.</summary>
public class GgufTokenizerTests
{
    private static string GgufPath => SharedData.Path_("models", "llama-spm-vocab-gguf", "ggml-vocab-llama-spm.gguf");

    [SharedDataFact]
    public void Reads_the_metadata()
    {
        var meta = GgufMetadata.Read(GgufPath);
        Assert.Equal(3u, meta.Version);
        Assert.Equal(22, meta.Values.Count);
        Assert.Equal("llama", meta.Get<string>("general.architecture"));
        Assert.Equal(32000, meta.Get<string[]>("tokenizer.ggml.tokens")!.Length);
        Assert.Equal(1, meta.GetInteger("tokenizer.ggml.bos_token_id", -1));
    }

    [SharedDataFact]
    public void Llama_cpp_vectors_pass()
    {
        var tok = TokenizerLoader.Load(Path.GetDirectoryName(GgufPath)!);
        Assert.IsType<SentencePieceBpeTokenizer>(tok);
        Assert.Equal((1, 2, 32000), (tok.BosId, tok.EosId, tok.VocabSize));
        // The .inp file holds the inputs, each followed by "\n__ggml_vocab_test__\n"; the .out file one line of ids (no BOS) per input.
        var inputs = File.ReadAllText(GgufPath + ".inp").Split("\n__ggml_vocab_test__\n")[..^1];
        var expected = File.ReadAllLines(GgufPath + ".out")
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray()).ToArray();
        Assert.Equal(46, inputs.Length);
        TokenizerAssert.SameIds(inputs, expected, t => tok.Encode(t, addBos: false), "llama-spm vector");
        foreach (var text in inputs) TokenizerAssert.RoundTripsAndStreams(tok, text);
    }

    [SharedDataFact]
    public void Gguf_vocab_agrees_with_tokenizer_model_on_the_stress_set()
    {
        var gguf = TokenizerLoader.Load(GgufPath);
        var spm = SentencePieceModelFile.Load(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model"));
        foreach (var text in StressTexts.All()) Assert.Equal(spm.Encode(text, true), gguf.Encode(text, true));
    }
}

/// <summary>A byte-level ("gpt2") GGUF vocabulary, written here from GPT-2's tokenizer.json with the layout
/// llama.cpp's converter uses, must tokenize as the tokenizer.json does.</summary>
public sealed class GgufByteLevelTests : IDisposable
{
    private readonly string _file = Path.GetTempFileName();

    public void Dispose() => File.Delete(_file);

    [SharedDataFact]
    public void Gpt2_gguf_vocab_matches_tokenizer_json()
    {
        var json = SharedData.Path_("models", "tokenizers", "gpt2", "tokenizer.json");
        using (var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(json)))
        {
            var model = doc.RootElement.GetProperty("model");
            var tokens = model.GetProperty("vocab").EnumerateObject().OrderBy(p => p.Value.GetInt32()).Select(p => p.Name).ToArray();
            var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).ToArray();
            var types = tokens.Select(t => t == "<|endoftext|>" ? 3 : 1).ToArray();
            WriteGguf(_file, [
                ("general.architecture", "gpt2"),
                ("tokenizer.ggml.model", "gpt2"),
                ("tokenizer.ggml.pre", "gpt-2"),
                ("tokenizer.ggml.tokens", tokens),
                ("tokenizer.ggml.token_type", types),
                ("tokenizer.ggml.merges", merges),
                ("tokenizer.ggml.eos_token_id", 50256u),
                ("tokenizer.ggml.bos_token_id", 50256u),
                ("tokenizer.ggml.add_bos_token", false),
            ]);
        }
        var gguf = GgufTokenizer.Load(_file);
        var reference = HfTokenizerJson.Load(json);
        Assert.Equal((-1, 50256), (gguf.BosId, gguf.EosId));
        foreach (var text in StressTexts.All()) Assert.Equal(reference.Encode(text, false), gguf.Encode(text, false));
        Assert.Equal("Hello world", gguf.Decode(gguf.Encode("Hello world<|endoftext|>", false)));
    }

    /// <summary>GGUF v3 with metadata only (ggml docs/gguf.md): value types 4 uint32, 5 int32, 7 bool, 8 string, 9 array.</summary>
    private static void WriteGguf(string path, (string Key, object Value)[] kvs)
    {
        using var w = new BinaryWriter(File.Create(path));
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write(0UL);
        w.Write((ulong)kvs.Length);
        foreach (var (key, value) in kvs)
        {
            WriteString(w, key);
            switch (value)
            {
                case uint u: w.Write(4u); w.Write(u); break;
                case bool b: w.Write(7u); w.Write(b ? (byte)1 : (byte)0); break;
                case string s: w.Write(8u); WriteString(w, s); break;
                case string[] a: w.Write(9u); w.Write(8u); w.Write((ulong)a.Length); foreach (var s in a) WriteString(w, s); break;
                case int[] a: w.Write(9u); w.Write(5u); w.Write((ulong)a.Length); foreach (var i in a) w.Write(i); break;
            }
        }
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
