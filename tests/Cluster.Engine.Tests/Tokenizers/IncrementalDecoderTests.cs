using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

public class IncrementalDecoderTests
{
    [SharedDataFact]
    public void A_character_split_over_byte_tokens_comes_out_whole_once_complete()
    {
        var tok = SentencePieceModelFile.Load(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model"));
        var ids = tok.Encode("😀!", addBos: true);
        Assert.Equal([1, 29871, 243, 162, 155, 131, 29991], ids); // BOS, "▁", the four UTF-8 bytes of U+1F600, "!"
        var decoder = new IncrementalDecoder(tok);
        var pieces = ids.Select(decoder.Push).ToArray();
        // BOS and the dummy-prefix space give nothing; the emoji appears only with its fourth byte.
        Assert.Equal(["", "", "", "", "", "😀", "!"], pieces);
        Assert.Equal("", decoder.Flush());
    }

    [SharedDataFact]
    public void Leading_space_is_dropped_only_at_the_start_of_a_sequence()
    {
        var tok = SentencePieceModelFile.Load(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model"));
        var decoder = new IncrementalDecoder(tok);
        Assert.Equal("Hello", decoder.Push(15043)); // "▁Hello" first: the dummy prefix
        Assert.Equal(" world", decoder.Push(3186));  // "▁world" later: a real space
        Assert.Equal("Hello world", tok.Decode([1, 15043, 3186, 2]));
    }

    [SharedDataFact]
    public void Byte_level_streams_partial_utf8_as_nothing_until_complete()
    {
        var tok = HfTokenizerJson.Load(SharedData.Path_("models", "tokenizers", "gpt2", "tokenizer.json"));
        var ids = tok.Encode("中文 ok", addBos: false);
        var decoder = new IncrementalDecoder(tok);
        var text = string.Concat(ids.Select(decoder.Push)) + decoder.Flush();
        Assert.Equal("中文 ok", text);
        Assert.DoesNotContain('\uFFFD', string.Concat(ids.Select(new IncrementalDecoder(tok).Push)));
    }
}
