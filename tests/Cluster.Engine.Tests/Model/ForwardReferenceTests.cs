using System.Text.Json;
using Cluster.Engine.KvCache;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Model;

/// <summary>The forward pass against the independent PyTorch reference and across the engine's own paths.</summary>
public sealed class ForwardReferenceTests
{
    private const int Tokens = 300;

    [SharedDataFact]
    public void Stories260K_greedy_from_BOS_prints_the_model_card_text()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var ids = new TextGenerator(model).Generate([tok.BosId], new() { Temperature = 0, MaxTokens = 80 }).Select(c => c.TokenId!.Value).ToList();
        var text = tok.Decode([tok.BosId, .. ids]); // BOS first: the leading-space rule applies after it
        Assert.StartsWith("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. " +
                          "One day, she saw a big, red ball. She wanted to play with it, but it was too high.", text);
    }

    [SharedDataFact]
    public void Llmctl_generate_streams_the_model_card_text()
    {
        var (code, stdout, stderr) = Llmctl.Run("generate", "--model", TestModels.Stories260K, "--max-tokens", "40");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", stdout);
        Assert.Contains("time to first token", stderr);
    }

    [SharedDataFact]
    public void Stories260K_logits_match_pytorch_over_300_tokens()
    {
        if (!PyTorchReference.Available()) return;
        var ids = TestModels.TinyStoriesIds(Tokens);
        using var model = TestModels.Load(TestModels.Stories260K);
        var ours = TestModels.PrefillLogits(model, ids);
        var reference = PyTorchReference.Logits(TestModels.Stories260K, ids);
        Assert.InRange(TestModels.MaxAbsDiff(ours, reference), 0, 1e-4);
    }

    [SharedDataFact]
    public void Version1_checkpoint_gives_the_legacy_logits()
    {
        if (!PyTorchReference.Available()) return;
        using var dir = new TempDir();
        var v1 = dir.File("stories260K_v1.bin");
        PyTorchReference.WriteVersion1(TestModels.Stories260K, v1);
        var ids = TestModels.TinyStoriesIds(64);
        using var legacy = TestModels.Load(TestModels.Stories260K);
        using var version1 = TestModels.Load(v1);
        Assert.Equal(0, TestModels.MaxAbsDiff(TestModels.PrefillLogits(legacy, ids), TestModels.PrefillLogits(version1, ids)));
    }

    [SharedDataFact]
    public void Converted_huggingface_folder_gives_the_llama2c_logits()
    {
        using var dir = new TempDir();
        var hf = dir.File("hf");
        var (code, _, stderr) = Llmctl.Run("convert", "--model", TestModels.Stories260K, "--out", hf);
        Assert.True(code == 0, stderr);
        var ids = TestModels.TinyStoriesIds(Tokens);
        using var llama2c = TestModels.Load(TestModels.Stories260K);
        using var converted = TestModels.Load(hf);
        Assert.Equal(Cluster.Engine.Model.RopeLayout.Halves, converted.Config.RopeLayout);
        Assert.InRange(TestModels.MaxAbsDiff(TestModels.PrefillLogits(llama2c, ids), TestModels.PrefillLogits(converted, ids)), 0, 1e-5);
    }

    [SkippableTheory]
    [InlineData(WeightType.F32)]
    [InlineData(WeightType.BF16)]
    [InlineData(WeightType.F16)]
    public void Synthetic_huggingface_checkpoint_matches_pytorch(WeightType type)
    {
        if (!PyTorchReference.Available()) return;
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder, type);
        var rng = new Random(3);
        var ids = Enumerable.Range(0, Tokens).Select(_ => rng.Next(0, 259)).ToArray();
        using var model = TestModels.Load(folder);
        Assert.True(model.Config.KvHeads < model.Config.Heads && !model.Config.TiedEmbeddings && model.Config.RopeTheta != 10000 && model.Config.RopeScaling is not null);
        var ours = TestModels.PrefillLogits(model, ids);
        var reference = PyTorchReference.Logits(folder, ids);
        Assert.InRange(TestModels.MaxAbsDiff(ours, reference), 0, 1e-4);
    }

    [SharedDataFact]
    public void Prefill_and_token_by_token_decode_give_the_same_logits()
    {
        var ids = TestModels.TinyStoriesIds(Tokens);
        using var model = TestModels.Load(TestModels.Stories260K);
        var prefill = TestModels.PrefillLogits(model, ids);
        int vocab = model.Config.VocabSize;
        using var cache = model.CreateCache(4); // small on purpose: the cache must grow
        var step = new float[vocab];
        for (int t = 0; t < ids.Length; t++)
        {
            KvRoom.Forward(model, [ids[t]], cache, step);
            Assert.InRange(TestModels.MaxAbsDiff(step, prefill.AsSpan(t * vocab, vocab)), 0, 1e-4);
        }
    }

    [SkippableFact]
    public void Chunked_prefill_equals_one_pass_and_managed_matmul_equals_openblas()
    {
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        var rng = new Random(5);
        var ids = Enumerable.Range(0, 100).Select(_ => rng.Next(0, 259)).ToArray();
        using var whole = Cluster.Engine.Loaders.ModelLoader.Load(folder, new CpuBackend(), maxChunk: 256);
        using var chunked = Cluster.Engine.Loaders.ModelLoader.Load(folder, new CpuBackend(), maxChunk: 7);
        using var managed = TestModels.Load(folder, openBlas: false);
        var expected = TestModels.PrefillLogits(whole, ids);
        Assert.InRange(TestModels.MaxAbsDiff(expected, TestModels.PrefillLogits(chunked, ids)), 0, 1e-5);
        Assert.InRange(TestModels.MaxAbsDiff(expected, TestModels.PrefillLogits(managed, ids)), 0, 1e-5);
        Assert.Contains("managed", managed.Backend.Name);
    }

    [SharedDataFact]
    public void Llmctl_perplexity_on_1024_tinystories_tokens_matches_pytorch()
    {
        if (!PyTorchReference.Available()) return;
        var (code, stdout, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K,
            "--text", SharedData.Path_("corpus", "tinystories_valid_head.txt"), "--tokens", "1024", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(1024, ids.Length);
        Assert.Equal(TestModels.TinyStoriesIds(1024), ids);
        var ours = doc.RootElement.GetProperty("perplexity").GetDouble();
        var reference = PyTorchReference.Perplexity(TestModels.Stories260K, ids);
        Assert.Equal(1023, doc.RootElement.GetProperty("tokens_scored").GetInt32());
        Assert.Equal(reference.Scored, doc.RootElement.GetProperty("tokens_scored").GetInt32());
        Assert.InRange(Math.Abs(ours - reference.Perplexity) / reference.Perplexity, 0, 1e-3);
    }
}
