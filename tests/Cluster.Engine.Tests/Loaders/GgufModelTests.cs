using System.Text;
using System.Text.Json;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.Engine.Tests.Loaders;

/// <summary>GGUF models written by llama.cpp against the same weights as llama2.c files and against
/// llama.cpp's own logits and dequantized tensors (shared/models/gguf/README.md says how each was made).</summary>
public sealed class GgufModelTests(ITestOutputHelper output)
{
    private static string Gguf(string name) => SharedData.Path_("models", "gguf", name);

    private static int[] Ids128() =>
        File.ReadAllText(Gguf(Path.Combine("llamacpp-logits", "ids128.txt")))
            .Split((char[])[' ', '\n', ',', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();

    private static float[] LlamaCppLogits(string model) =>
        ReadFloats(Gguf(Path.Combine("llamacpp-logits", $"{model}.logits.f32")));

    private static float[] ReadFloats(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var f = new float[bytes.Length / 4];
        Buffer.BlockCopy(bytes, 0, f, 0, f.Length * 4);
        return f;
    }

    [SharedDataTheory]
    [InlineData("stories260K-f32.gguf", "../stories260K/stories260K.bin")]
    [InlineData("rand128-f32.gguf", "rand128.bin")]
    public void F32_gguf_gives_the_llama2c_logits(string gguf, string bin)
    {
        var ids = Ids128();
        using var a = TestModels.Load(Gguf(gguf));
        using var b = TestModels.Load(Gguf(bin));
        Assert.Equal(RopeLayout.Interleaved, a.Config.RopeLayout);
        Assert.Equal(b.Config with { TiedEmbeddings = a.Config.TiedEmbeddings, MaxPositions = a.Config.MaxPositions, EosIds = a.Config.EosIds }, a.Config, new ConfigComparer());
        var diff = TestModels.MaxAbsDiff(TestModels.PrefillLogits(a, ids), TestModels.PrefillLogits(b, ids));
        output.WriteLine($"{gguf} vs {bin}: max |diff| {diff:G3}");
        Assert.InRange(diff, 0, 1e-5);
    }

    private sealed class ConfigComparer : IEqualityComparer<LlamaConfig>
    {
        public bool Equals(LlamaConfig? x, LlamaConfig? y) =>
            x!.Dim == y!.Dim && x.HiddenDim == y.HiddenDim && x.Layers == y.Layers && x.Heads == y.Heads && x.KvHeads == y.KvHeads && x.VocabSize == y.VocabSize;
        public int GetHashCode(LlamaConfig obj) => obj.Dim;
    }

    /// <summary>Our logits for a quantized file are no farther from llama.cpp's for that file than
    /// llama.cpp's own are from its F32 ones (the error quantization itself brings).</summary>
    [SharedDataTheory]
    [InlineData("rand128-f16", "rand128-f32")]
    [InlineData("rand128-bf16", "rand128-f32")]
    [InlineData("rand128-q8_0", "rand128-f32")]
    [InlineData("rand256-q8_0", "rand256-f32")]
    [InlineData("stories260K-f16", "stories260K-f32")]
    [InlineData("stories260K-bf16", "stories260K-f32")]
    [InlineData("rand128-f32", "rand128-f32")]
    [InlineData("stories260K-f32", "stories260K-f32")]
    public void Gguf_logits_are_within_llama_cpps_own_quantization_error(string model, string f32)
    {
        var ids = Ids128();
        using var m = TestModels.Load(Gguf(model + ".gguf"));
        var ours = TestModels.PrefillLogits(m, ids);
        var theirs = LlamaCppLogits(model);
        var ours_vs_theirs = TestModels.MaxAbsDiff(ours, theirs);
        var quantization = TestModels.MaxAbsDiff(theirs, LlamaCppLogits(f32));
        output.WriteLine($"{model} ({m.Weights.MatrixFormat}): ours vs llama.cpp {ours_vs_theirs:G3}; llama.cpp vs its F32 {quantization:G3}");
        if (model == f32)
        {
            // Same F32 weights: only llama.cpp's F16 K/V cache separates us (our F32 path equals the
            // llama2.c file exactly and PyTorch to 1e-4): a sanity bound of 1% of the logits' spread.
            Assert.InRange(ours_vs_theirs, 0, 0.01 * Std(theirs));
            return;
        }
        Assert.InRange(ours_vs_theirs, 0, quantization);
    }

    private static double Std(float[] x)
    {
        double mean = x.Average(v => (double)v);
        return Math.Sqrt(x.Average(v => (v - mean) * (v - mean)));
    }

    [SharedDataTheory]
    [InlineData("rand256-q4_0")]
    [InlineData("rand256-q4_k_m")]
    public void Dequantized_tensors_equal_llama_cpps(string model)
    {
        var values = ReadFloats(Gguf(Path.Combine("dequantized", $"{model}.dequant.f32")));
        using var index = JsonDocument.Parse(File.ReadAllText(Gguf(Path.Combine("dequantized", $"{model}.dequant.json"))));
        using var file = GgufFile.Open(Gguf(model + ".gguf"));
        var seen = new HashSet<string>();
        foreach (var e in index.RootElement.EnumerateArray())
        {
            var name = e.GetProperty("name").GetString()!;
            var t = file.Find(name)!;
            Assert.Equal(e.GetProperty("type").GetString(), GgmlTypes.Name(t.GgmlType));
            var data = file.Read(t);
            var ours = new float[data.Elements];
            data.CopyToFloat32(ours);
            var expected = values.AsSpan(checked((int)e.GetProperty("offset_floats").GetInt64()), e.GetProperty("count").GetInt32());
            Assert.True(expected.SequenceEqual(ours), $"{name} ({GgmlTypes.Name(t.GgmlType)}) differs from llama.cpp's dequantization");
            seen.Add(GgmlTypes.Name(t.GgmlType));
        }
        output.WriteLine($"{model}: types {string.Join(", ", seen)}");
        Assert.Contains(model.EndsWith("q4_0") ? "Q4_0" : "Q4_K", seen);
        Assert.Contains("Q6_K", seen);
    }

    [SharedDataFact]
    public void Q8_0_quantizer_reproduces_llama_quantize()
    {
        using var f32 = GgufFile.Open(Gguf("rand128-f32.gguf"));
        using var q8 = GgufFile.Open(Gguf("rand128-q8_0.gguf"));
        using var store = new WeightStore();
        int compared = 0;
        foreach (var t in q8.Tensors.Where(t => t.GgmlType == 8))
        {
            var mine = store.Convert(f32.Read(f32.Find(t.Name)!), WeightType.Q8_0);
            var theirs = q8.Read(t);
            Assert.Equal(theirs.ByteLength, mine.ByteLength);
            unsafe
            {
                Assert.True(new ReadOnlySpan<byte>(mine.Pointer, (int)mine.ByteLength).SequenceEqual(new ReadOnlySpan<byte>(theirs.Pointer, (int)theirs.ByteLength)), t.Name);
            }
            compared++;
        }
        Assert.True(compared >= 29, $"only {compared} Q8_0 tensors");
    }

    [SharedDataFact]
    public void Stories260K_f32_gguf_greedy_text_is_the_model_card_text()
    {
        var path = Gguf("stories260K-f32.gguf");
        using var model = TestModels.Load(path);
        var tok = ModelLoader.LoadTokenizer(path, model.Config); // the vocabulary from the same file
        var ids = new TextGenerator(model).Generate([tok.BosId], new() { Temperature = 0, MaxTokens = 80 }).Select(c => c.TokenId!.Value).ToList();
        var text = tok.Decode([tok.BosId, .. ids]);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " +
                          "One day, she saw a big, red ball. She wanted to play with it, but it was too high.", text);
    }

    [SharedDataFact]
    public void Unsupported_architecture_is_named()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Gguf("rand128-f32.gguf"));
        var at = IndexOf(bytes, "general.architecture"u8.ToArray()) + "general.architecture".Length + 4 + 8;
        Assert.Equal("llama", Encoding.ASCII.GetString(bytes, at, 5));
        Encoding.ASCII.GetBytes("qwen2").CopyTo(bytes, at);
        var path = dir.File("qwen.gguf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path));
        Assert.Contains("general.architecture 'qwen2' is not supported", e.Message);
    }

    [SharedDataFact]
    public void Unsupported_tensor_type_is_named()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(Gguf("rand128-f32.gguf"));
        // The tensor info: name, uint32 n_dims (2), uint64 ne[2], uint32 type: make it Q5_K (13).
        var name = "blk.0.attn_q.weight"u8.ToArray();
        var at = IndexOf(bytes, name) + name.Length + 4 + 16;
        Assert.Equal(0, BitConverter.ToInt32(bytes, at));
        BitConverter.GetBytes(13).CopyTo(bytes, at);
        var path = dir.File("q5k.gguf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path));
        Assert.Contains("'blk.0.attn_q.weight' has GGML type Q5_K", e.Message);
    }

    private static int IndexOf(byte[] haystack, byte[] needle, int from = 0)
    {
        var i = haystack.AsSpan(from).IndexOf(needle);
        Assert.True(i >= 0, "pattern not found");
        return from + i;
    }
}
