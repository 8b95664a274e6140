using System.Text;
using System.Text.Json.Nodes;
using Cluster.Engine.Loaders;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Loaders;

/// <summary>Every broken checkpoint gives a <see cref="ModelFormatException"/> naming the file and the problem.</summary>
public sealed class LoaderErrorTests
{
    private static ModelFormatException LoadFails(string path)
    {
        var e = Assert.Throws<ModelFormatException>(() => TestModels.Load(path).Dispose());
        Assert.StartsWith(path, e.Message);
        return e;
    }

    [SharedDataFact]
    public void Truncated_llama2c_checkpoint_is_named_as_truncated()
    {
        using var dir = new TempDir();
        var path = dir.File("cut.bin");
        var bytes = File.ReadAllBytes(TestModels.Stories260K);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        Assert.Contains("truncated", LoadFails(path).Problem);
    }

    [Fact]
    public void Garbage_file_is_not_taken_for_a_llama2c_checkpoint()
    {
        using var dir = new TempDir();
        var path = dir.File("garbage.bin");
        File.WriteAllBytes(path, Enumerable.Range(0, 4096).Select(i => (byte)(i * 131 + 7)).ToArray());
        Assert.Contains("not a llama2.c checkpoint", LoadFails(path).Problem);
    }

    [Fact]
    public void Quantized_llama2c_version_is_refused_by_version()
    {
        using var dir = new TempDir();
        var path = dir.File("q80.bin");
        var header = new byte[256];
        BitConverter.GetBytes(0x616b3432u).CopyTo(header, 0);
        BitConverter.GetBytes(2).CopyTo(header, 4);
        File.WriteAllBytes(path, header);
        Assert.Contains("version 2", LoadFails(path).Problem);
    }

    [Fact]
    public void Missing_path_is_reported()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-model-" + Guid.NewGuid());
        Assert.Contains("not found", LoadFails(path).Problem);
    }

    [Fact]
    public void Config_with_more_layers_than_weights_names_the_missing_tensor()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        EditConfig(folder, c => c["num_hidden_layers"] = 4);
        Assert.Contains("has no tensor 'model.layers.3.", LoadFails(folder).Problem);
    }

    [Fact]
    public void Shape_that_disagrees_with_the_config_is_named()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        EditConfig(folder, c => c["intermediate_size"] = 128);
        var e = LoadFails(folder);
        Assert.Contains("model.safetensors", e.FilePath);
        Assert.Contains("has shape [160, 64], expected [128, 64]", e.Problem);
    }

    [Fact]
    public void Unsupported_architecture_is_refused()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        EditConfig(folder, c => c["architectures"] = new JsonArray("GPT2LMHeadModel"));
        Assert.Contains("GPT2LMHeadModel is not supported", LoadFails(folder).Problem);
    }

    [Fact]
    public void Truncated_safetensors_is_named_as_truncated()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        var weights = Path.Combine(folder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length - 1000)]);
        Assert.Contains("truncated", LoadFails(folder).Problem);
    }

    [Fact]
    public void Unsupported_dtype_names_the_tensor_and_dtype()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        var weights = Path.Combine(folder, "model.safetensors");
        // Relabel one F32 tensor as I32 (same width, so offsets stay valid): the loader must refuse it.
        var bytes = File.ReadAllBytes(weights);
        var headerLength = (int)BitConverter.ToUInt64(bytes, 0);
        var header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        var name = "\"model.norm.weight\":{\"dtype\":\"F32\"";
        Assert.Contains(name, header);
        var patched = Encoding.UTF8.GetBytes(header.Replace(name, name.Replace("F32", "I32")));
        Assert.Equal(headerLength, patched.Length);
        patched.CopyTo(bytes, 8);
        File.WriteAllBytes(weights, bytes);
        var e = LoadFails(folder);
        Assert.Contains("'model.norm.weight' has dtype I32", e.Problem);
    }

    [Fact]
    public void Sharded_checkpoint_loads_and_a_missing_shard_is_named()
    {
        using var dir = new TempDir();
        var folder = WriteTiny(dir);
        var rng = new Random(1);
        var ids = Enumerable.Range(0, 20).Select(_ => rng.Next(0, 259)).ToArray();
        float[] expected;
        using (var single = TestModels.Load(folder)) expected = TestModels.PrefillLogits(single, ids);

        // The same tensors behind an index: one shard of its own name (the loader must follow the map).
        const string shard = "model-00001-of-00001.safetensors";
        using (var st = SafetensorsFile.Open(Path.Combine(folder, "model.safetensors")))
        {
            var map = new JsonObject();
            foreach (var n in st.Names) map[n] = shard;
            File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        }
        File.Move(Path.Combine(folder, "model.safetensors"), Path.Combine(folder, shard));
        using (var sharded = TestModels.Load(folder)) Assert.Equal(expected, TestModels.PrefillLogits(sharded, ids));

        File.Delete(Path.Combine(folder, shard));
        Assert.Contains($"lists shard '{shard}', which does not exist", LoadFails(folder).Problem);
    }

    private static string WriteTiny(TempDir dir)
    {
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        return folder;
    }

    private static void EditConfig(string folder, Action<JsonObject> edit)
    {
        var path = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }
}
