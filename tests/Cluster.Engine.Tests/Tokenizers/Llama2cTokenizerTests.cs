using System.Diagnostics;
using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

public class Llama2cTokenizerTests
{
    private static SentencePieceBpeTokenizer Tok512() => Llama2cTokenizer.Load(SharedData.Path_("models", "stories260K", "tok512.bin"), 512);

    [SharedDataFact]
    public void Tok512_encodes_with_bos_and_dummy_prefix_and_round_trips()
    {
        var tok = Tok512();
        Assert.Equal(512, tok.VocabSize);
        var ids = tok.Encode("Once upon a time", addBos: true);
        Assert.Equal(1, ids[0]);
        Assert.True(ids.Length < 10, $"expected merges, got {ids.Length} ids");
        Assert.StartsWith(" ", tok.TokenText(ids[1])); // the dummy prefix joined the first word
        Assert.Equal("Once upon a time", tok.Decode(ids));
        Assert.Equal([], tok.Encode("", addBos: false));
        Assert.Equal([1], tok.Encode("", addBos: true));
        Assert.Equal(13, tok.Encode("\n", addBos: false)[^1]); // newline is byte token <0x0A> = 10 + 3
    }

    [SharedDataFact]
    public void Tok512_matches_naive_run_c_encode()
    {
        var tok = Tok512();
        var texts = StressTexts.Short.Concat(File.ReadLines(SharedData.Path_("corpus", "tinystories_valid_head.txt")).Take(200)).ToArray();
        var expected = ReferenceTokenizers.Llama2cNaive(SharedData.Path_("models", "stories260K", "tok512.bin"), 512, texts);
        for (var i = 0; i < texts.Length; i++)
            Assert.True(expected[i].SequenceEqual(tok.Encode(texts[i], addBos: true)), $"text {i}: {texts[i]}");
    }

    [SharedDataFact]
    public void Tok512_decode_inverts_encode_on_stress_texts()
    {
        var tok = Tok512();
        foreach (var text in StressTexts.All())
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
    }

    [SharedDataFact]
    public void Llama2_tokenizer_bin_matches_sentencepiece_model()
    {
        var tok = Llama2cTokenizer.Load(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.bin"), 32000);
        var texts = StressTexts.All().Concat(File.ReadLines(SharedData.Path_("corpus", "wikitext2_raw_test.txt")).Take(300)).ToArray();
        var expected = ReferenceTokenizers.SentencePiece(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model"), texts);
        if (expected is null) return;
        for (var i = 0; i < texts.Length; i++)
            Assert.True(expected[i].SequenceEqual(tok.Encode(texts[i], addBos: false)), $"text {i}: {texts[i][..Math.Min(80, texts[i].Length)]}");
    }

    [SharedDataFact]
    public void Encoding_is_fast_on_a_100KB_word()
    {
        var tok = Tok512();
        var sw = Stopwatch.StartNew();
        var ids = tok.Encode(StressTexts.LongWord(), addBos: false);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(2), $"took {sw.Elapsed}");
        Assert.Equal(StressTexts.LongWord(), tok.Decode(ids));
    }
}
