using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

public class TokenizerLoaderTests
{
    [SharedDataFact]
    public void Picks_the_format_from_the_folder()
    {
        Assert.IsType<HfBpeTokenizer>(TokenizerLoader.Load(SharedData.Path_("models", "tokenizers", "gpt2")));
        // tokenizer.model is preferred over tokenizer.bin
        Assert.EndsWith("tokenizer.model", TokenizerLoader.Resolve(SharedData.Path_("models", "llama2-tokenizer")));
        Assert.EndsWith(".gguf", TokenizerLoader.Resolve(SharedData.Path_("models", "llama-spm-vocab-gguf")));
        var bin = TokenizerLoader.Load(SharedData.Path_("models", "stories260K", "tok512.bin"));
        Assert.Equal(512, bin.VocabSize); // counted from the file when no vocab size is given
    }

    [Fact]
    public void Prefers_tokenizer_json_then_model_then_bin()
    {
        var dir = Directory.CreateTempSubdirectory("tok-loader").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.bin"), "");
            Assert.EndsWith("tokenizer.bin", TokenizerLoader.Resolve(dir));
            File.WriteAllText(Path.Combine(dir, "tokenizer.model"), "");
            Assert.EndsWith("tokenizer.model", TokenizerLoader.Resolve(dir));
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "");
            Assert.EndsWith("tokenizer.json", TokenizerLoader.Resolve(dir));
            Assert.Throws<FileNotFoundException>(() => TokenizerLoader.Resolve(Path.Combine(dir, "missing")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Malformed_files_are_reported_as_invalid_data()
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(file, [0x0a, 0xff]);
            Assert.Throws<InvalidDataException>(() => SentencePieceModelFile.Load(file));
            File.WriteAllBytes(file, "GGUF"u8.ToArray());
            Assert.Throws<InvalidDataException>(() => GgufMetadata.Read(file));
        }
        finally
        {
            File.Delete(file);
        }
    }
}
