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
