using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Engine.Kernels.Ilgpu;
using Cluster.Engine.KvCache;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Kernels.Ilgpu;

/// <summary>The whole forward pass on ILGPU's CPU accelerator (fp32 weights) against CpuBackend:
/// logits within 1e-4 on stories260K and on a GQA checkpoint with Llama 3 RoPE scaling, for prefill,
/// decode, batched decode and a compressed cache; and a KV handoff between the two backends.</summary>
public sealed class IlgpuForwardTests
{
    private const double Tolerance = 1e-4;

    private static LlamaModel LoadIlgpu(string path, int maxChunk = 256) =>
        ModelLoader.Load(path, new IlgpuBackend(new DeviceSpec(DeviceKind.IlgpuCpu)), maxChunk);

    /// <summary>All-token logits of a prefill (in chunks of 16, so chunked attention over cached
    /// tokens runs too) and then 4 decode steps, on both backends.</summary>
    private static void AssertForwardMatches(string path, int[] ids)
    {
        using var cpu = ModelLoader.Load(path, new CpuBackend(threads: 1), maxChunk: 16);
        using var gpu = LoadIlgpu(path, maxChunk: 16);
        Assert.InRange(TestModels.MaxAbsDiff(TestModels.PrefillLogits(cpu, ids), TestModels.PrefillLogits(gpu, ids)), 0, Tolerance);

        int vocab = cpu.Config.VocabSize;
        using var cc = cpu.CreateCache(ids.Length + 4);
        using var gc = gpu.CreateCache(ids.Length + 4);
        var (lc, lg) = (new float[vocab], new float[vocab]);
        KvRoom.Forward(cpu, ids, cc, lc);
        KvRoom.Forward(gpu, ids, gc, lg);
        for (int step = 0; step < 4; step++)
        {
            Assert.InRange(TestModels.MaxAbsDiff(lc, lg), 0, Tolerance);
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lc);
            KvRoom.Forward(cpu, [next], cc, lc);
            KvRoom.Forward(gpu, [next], gc, lg);
        }
    }

    [SharedDataFact]
    public void Stories260K_logits_match_the_cpu_backend()
    {
        AssertForwardMatches(TestModels.Stories260K, TestModels.TinyStoriesIds(40));
    }

    [SharedDataFact]
    public void Stories260K_greedy_text_equals_the_cpu_backend()
    {
        using var cpu = TestModels.Load(TestModels.Stories260K);
        using var gpu = LoadIlgpu(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var p = new Cluster.Engine.Sampling.SamplingParameters { Temperature = 0, MaxTokens = 30 };
        var a = new TextGenerator(cpu).Generate([tok.BosId], p).Select(c => c.TokenId!.Value).ToArray();
        var b = new TextGenerator(gpu).Generate([tok.BosId], p).Select(c => c.TokenId!.Value).ToArray();
        Assert.Equal(a, b);
        Assert.StartsWith("Once upon a time", tok.Decode([tok.BosId, .. b]));
    }

    [Fact]
    public void Synthetic_gqa_checkpoint_logits_match_the_cpu_backend()
    {
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        var rng = new Random(3);
        AssertForwardMatches(folder, Enumerable.Range(0, 37).Select(_ => rng.Next(3, 259)).ToArray());
    }

    [Theory]
    [InlineData("dense")]
    [InlineData("sink_window(4,12)")]
    public void Batched_decode_matches_the_cpu_backend(string policy)
    {
        using var dir = new TempDir();
        var folder = dir.File("tiny");
        TestModels.WriteSynthetic(folder);
        using var cpu = ModelLoader.Load(folder, new CpuBackend(threads: 1));
        using var gpu = LoadIlgpu(folder);
        KvCompressionPolicy Policy() => KvPolicyRegistry.Parse(policy);
        var rng = new Random(5);
        var prompts = new[] { 3, 20, 9 }.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, 259)).ToArray()).ToArray();
        int vocab = cpu.Config.VocabSize, batch = prompts.Length;
        var cc = prompts.Select(_ => cpu.CreateCache(8, Policy())).ToList();
        var gc = prompts.Select(_ => gpu.CreateCache(8, Policy())).ToList();
        try
        {
            var scratch = new float[vocab];
            for (int i = 0; i < batch; i++)
                foreach (var t in prompts[i])
                {
                    KvRoom.Forward(cpu, [t], cc[i], scratch);
                    KvRoom.Forward(gpu, [t], gc[i], scratch);
                }
            var tokens = new[] { 7, 8, 9 };
            var (lc, lg) = (new float[batch * vocab], new float[batch * vocab]);
            for (int step = 0; step < 3; step++)
            {
                foreach (var c in cc) KvRoom.Make(cpu, c, 1);
                foreach (var c in gc) KvRoom.Make(gpu, c, 1);
                cpu.ForwardBatch(tokens, cc, lc);
                gpu.ForwardBatch(tokens, gc, lg);
                Assert.InRange(TestModels.MaxAbsDiff(lc, lg), 0, Tolerance);
                for (int i = 0; i < batch; i++) tokens[i] = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(lc.AsSpan(i * vocab, vocab));
            }
        }
        finally
        {
            foreach (var c in cc.Concat(gc)) c.Dispose();
        }
    }

    /// <summary>Prefill on the ILGPU device, KV blocks copied to the host (the wire format) and into a
    /// CPU cache, decode on the CPU: the tokens equal an all-CPU run (the GPU prefill / CPU decode split).</summary>
    [SharedDataFact]
    public void Kv_blocks_from_an_ilgpu_prefill_continue_on_the_cpu()
    {
        using var cpu = TestModels.Load(TestModels.Stories260K);
        using var gpu = LoadIlgpu(TestModels.Stories260K);
        var ids = TestModels.TinyStoriesIds(24);
        int vocab = cpu.Config.VocabSize;

        int[] Decode(LlamaModel m, SequenceKvCache cache, float[] logits)
        {
            var tokens = new int[8];
            for (int i = 0; i < tokens.Length; i++)
            {
                tokens[i] = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
                KvRoom.Forward(m, [tokens[i]], cache, logits);
            }
            return tokens;
        }

        using var local = cpu.CreateCache(ids.Length + 8);
        var localLogits = new float[vocab];
        KvRoom.Forward(cpu, ids, local, localLogits);
        var expected = Decode(cpu, local, localLogits);

        using var prefill = gpu.CreateCache(ids.Length);
        var logits = new float[vocab];
        KvRoom.Forward(gpu, ids, prefill, logits);
        var blocks = Enumerable.Range(0, gpu.Config.Layers).Select(l => KvCacheSnapshot.Capture(gpu.Backend, prefill, l)).ToArray();
        using var decode = cpu.CreateCache(ids.Length + 8);
        foreach (var block in blocks) KvCacheSnapshot.Restore(cpu.Backend, decode, block);
        KvCacheSnapshot.SetTokensSeen(decode, ids.Length);
        Assert.Equal(expected, Decode(cpu, decode, logits));

        // And back: CPU blocks into a device cache reproduce the device's own next logits.
        using var back = gpu.CreateCache(ids.Length + 1);
        foreach (var l in Enumerable.Range(0, cpu.Config.Layers)) KvCacheSnapshot.Restore(gpu.Backend, back, KvCacheSnapshot.Capture(cpu.Backend, local, l));
        KvCacheSnapshot.SetTokensSeen(back, local.TokensSeen);
        var (a, b) = (new float[vocab], new float[vocab]);
        KvRoom.Forward(cpu, [3], local, a);
        KvRoom.Forward(gpu, [3], back, b);
        Assert.InRange(TestModels.MaxAbsDiff(a, b), 0, Tolerance);
    }
}
