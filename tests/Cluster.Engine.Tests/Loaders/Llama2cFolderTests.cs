using Cluster.Engine.Loaders;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Loaders;

/// <summary>A folder holding a llama2.c checkpoint and its tok*.bin loads as the checkpoint file does
/// (issue 19: `--model shared/models/stories260K` asked for config.json).</summary>
public class Llama2cFolderTests
{
    [SharedDataFact]
    public void A_folder_with_a_llama2c_bin_and_its_tokenizer_loads_like_the_file()
    {
        var folder = SharedData.Path_("models", "stories260K");
        var file = Path.Combine(folder, "stories260K.bin");
        Assert.Equal(file, ModelLoader.Llama2cFileIn(folder));
        var config = ModelLoader.ReadConfig(folder);
        var expected = ModelLoader.ReadConfig(file);
        Assert.Equal((expected.VocabSize, expected.Layers, expected.MaxPositions, expected.HeadDim), (config.VocabSize, config.Layers, config.MaxPositions, config.HeadDim));
        using var model = ModelLoader.Load(folder);
        var tokenizer = ModelLoader.LoadTokenizer(folder, config);
        Assert.Equal(ModelLoader.LoadTokenizer(file, config).Encode("Once upon a time", addBos: true), tokenizer.Encode("Once upon a time", addBos: true));
    }

    [Fact]
    public void A_folder_with_two_checkpoints_names_them_and_tokenizers_are_not_checkpoints()
    {
        var dir = Directory.CreateTempSubdirectory("llmcluster-l2c-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "tok512.bin"), [0]);
            File.WriteAllBytes(Path.Combine(dir, "tokenizer.bin"), [0]);
            Assert.Null(ModelLoader.Llama2cFileIn(dir));
            File.WriteAllBytes(Path.Combine(dir, "a.bin"), [0]);
            Assert.Equal(Path.Combine(dir, "a.bin"), ModelLoader.Llama2cFileIn(dir));
            File.WriteAllBytes(Path.Combine(dir, "b.bin"), [0]);
            var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Llama2cFileIn(dir));
            Assert.Contains("a.bin", e.Message);
            Assert.Contains("b.bin", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
