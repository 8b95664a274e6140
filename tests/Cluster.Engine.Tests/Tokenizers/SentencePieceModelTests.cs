using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>Llama 2's tokenizer.model against python3-sentencepiece (the acceptance set of issue 3).</summary>
public class SentencePieceModelTests
{
    private static string ModelPath => SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model");

    [SharedDataFact]
    public void Reads_the_llama2_model()
    {
        var tok = SentencePieceModelFile.Load(ModelPath);
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal((1, 2), (tok.BosId, tok.EosId));
        Assert.Equal("<0x0A>", tok.TokenText(13));
        Assert.Equal([1, 15043, 3186], tok.Encode("Hello world", addBos: true));
    }

    public static TheoryData<string> CorpusFiles => new()
    {
        "tinystories_valid_head.txt", "wikitext2_raw_test.txt", "pg2701_moby_dick.txt", "pg1342_pride_and_prejudice.txt",
    };

    [SharedDataTheory]
    [MemberData(nameof(CorpusFiles))]
    public void Every_corpus_line_matches_sentencepiece(string file)
    {
        var tok = SentencePieceModelFile.Load(ModelPath);
        var lines = TokenizerAssert.Lines(SharedData.Path_("corpus", file));
        var expected = ReferenceTokenizers.SentencePiece(ModelPath, lines);
        if (expected is null) return;
        TokenizerAssert.SameIds(lines, expected, t => tok.Encode(t, addBos: false), file);
    }

    [SharedDataFact]
    public void Whole_files_and_stress_set_match_sentencepiece()
    {
        var tok = SentencePieceModelFile.Load(ModelPath);
        var texts = StressTexts.All().Append(File.ReadAllText(SharedData.Path_("corpus", "pg1342_pride_and_prejudice.txt"))).ToArray();
        var expected = ReferenceTokenizers.SentencePiece(ModelPath, texts);
        if (expected is null) return;
        TokenizerAssert.SameIds(texts, expected, t => tok.Encode(t, addBos: false), "stress");
    }

    [SharedDataFact]
    public void Decode_inverts_encode_and_streams_whole_characters()
    {
        var tok = SentencePieceModelFile.Load(ModelPath);
        foreach (var text in StressTexts.All()) TokenizerAssert.RoundTripsAndStreams(tok, text);
        foreach (var line in TokenizerAssert.Lines(SharedData.Path_("corpus", "wikitext2_raw_test.txt")).Take(500))
            TokenizerAssert.RoundTripsAndStreams(tok, line);
    }
}
