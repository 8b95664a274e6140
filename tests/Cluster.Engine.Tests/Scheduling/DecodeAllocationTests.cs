using Cluster.Engine.KvCache;
using Cluster.Engine.Generation;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Engine.Scheduling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.Engine.Tests.Scheduling;

/// <summary>Issue 16: steady-state batched decode allocates (almost) nothing per step: scratch comes
/// from the run state, and no step builds lists, closures or parallel-loop state.</summary>
public sealed class DecodeAllocationTests(ITestOutputHelper output)
{
    /// <summary>Bytes the batch thread may allocate per sequence per step: what every streamed token
    /// needs (its <see cref="GenerationChunk"/> and its text) with room to spare. Before issue 16's
    /// cleanup a step of 8 sequences on stories260K allocated ~25 KB on this thread.</summary>
    private const int BytesPerSequenceStep = 256;

    [SharedDataFact]
    public async Task Steady_state_batched_decode_allocates_only_the_streamed_chunks()
    {
        // Two threads: products and attention of a batch of 8 over 100+ cached tokens are big enough
        // to be split across them (the parallel paths are what allocated most).
        using var model = ModelLoader.Load(TestModels.Stories260K, new CpuBackend(threads: 2));
        var tok = TestModels.Stories260KTokenizer();
        const int sequences = 8, warmup = 20, measured = 50;
        var text = TestModels.TinyStoriesIds(200);
        var p = new SamplingParameters { Temperature = 0, Seed = 1, MaxTokens = warmup + measured + 20, IgnoreEos = true };
        var prefilled = new List<(SequenceGeneration Seq, int First)>();
        for (int i = 0; i < sequences; i++)
        {
            var prompt = text[..(100 + 9 * i)];
            var cache = model.CreateCache(prompt.Length + p.MaxTokens);
            var seq = new SequenceGeneration(model.Config, p, tok, prompt, cache);
            KvRoom.Forward(model, prompt, cache, seq.Logits);
            prefilled.Add((seq, seq.Step(TimeSpan.Zero).TokenId!.Value));
        }

        // Read on the batch thread after each step: its allocation counter and the batch size.
        var threadBytes = new long[warmup + measured + 1];
        var sizes = new int[threadBytes.Length];
        int steps = 0;
        using var batcher = new ContinuousBatcher(model, sequences, afterStep: (n, _) =>
        {
            if (steps < threadBytes.Length)
            {
                threadBytes[steps] = GC.GetAllocatedBytesForCurrentThread();
                sizes[steps] = n;
            }
            steps++;
        });
        // Every sequence joins before any is drained: a drain reads synchronously while chunks are there, and
        // on a loaded CI machine the first one never paused, so its 90 steps ran alone (batch sizes of 1).
        var streams = prefilled.Select(x => batcher.Add(x.Seq, [x.First], CancellationToken.None)).ToList();
        var drains = streams.Select(Drain).ToList();
        var counts = await Task.WhenAll(drains).WaitAsync(TimeSpan.FromMinutes(2));

        Assert.All(counts, c => Assert.Equal(p.MaxTokens - 1, c));
        Assert.True(steps > threadBytes.Length, $"only {steps} steps ran");
        // Every measured step ran the whole batch (all sequences joined before the warm-up ended).
        Assert.All(sizes[warmup..], n => Assert.Equal(sequences, n));
        double perStep = (threadBytes[warmup + measured] - threadBytes[warmup]) / (double)measured;
        output.WriteLine($"batch thread: {perStep:F0} bytes per step of {sequences} sequences");
        Assert.True(perStep <= BytesPerSequenceStep * sequences,
            $"a steady-state step of {sequences} sequences allocated {perStep:F0} bytes on the batch thread (bound {BytesPerSequenceStep * sequences})");
    }

    private static async Task<int> Drain(System.Threading.Channels.ChannelReader<GenerationChunk> reader)
    {
        int n = 0;
        await foreach (var c in reader.ReadAllAsync())
            if (c.TokenId is not null) n++;
        return n;
    }
}
