using Cluster.Engine.KvCache;
using Cluster.Engine.Generation;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Scheduling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Scheduling;

public sealed class ContinuousBatcherTests
{
    private static async Task<List<GenerationChunk>> Drain(System.Threading.Channels.ChannelReader<GenerationChunk> reader)
    {
        var list = new List<GenerationChunk>();
        await foreach (var c in reader.ReadAllAsync()) list.Add(c);
        return list;
    }

    /// <summary>An output as its caller sees it: prefill's first chunk, then what the batch streamed.</summary>
    private static async Task<GenerationOutput> Whole(GenerationChunk first, Task<List<GenerationChunk>> tail) =>
        GenerationOutput.Collect([first, .. await tail.WaitAsync(TimeSpan.FromMinutes(2))]).Single();

    /// <summary>Starts a sequence the way a decode worker does: prefill, sample the first token, then
    /// hand it to the batcher with that token to feed.</summary>
    private static (SequenceGeneration Seq, GenerationChunk First) Prefill(LlamaModel model, Cluster.Engine.Tokenizers.ITokenizer tok, int[] prompt, SamplingParameters p)
    {
        var cache = model.CreateCache(prompt.Length + p.MaxTokens);
        var seq = new SequenceGeneration(model.Config, p, tok, prompt, cache);
        KvRoom.Forward(model, prompt, cache, seq.Logits);
        return (seq, seq.Step(TimeSpan.Zero));
    }

    [SharedDataFact]
    public async Task Concurrent_streams_equal_their_local_runs()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        string[] prompts = ["Once upon a time", "The dog", "Lily and Ben went to the park", "One day", "A big red ball", "Tom", "The sun was hot", "She was sad"];
        var ps = prompts.Select((_, i) => new SamplingParameters { Temperature = i % 2 == 0 ? 0 : 0.8f, TopP = 0.9f, Seed = 100 + i, MaxTokens = 20 + 7 * i }).ToArray();
        var expected = prompts.Select((text, i) => GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(text, true), ps[i])).Single()).ToList();

        // The model is not thread-safe: prefill before the batch thread starts using it.
        var prefilled = prompts.Select((text, i) => Prefill(model, tok, tok.Encode(text, true), ps[i])).ToList();
        using var batcher = new ContinuousBatcher(model, maxBatch: 5); // fewer than the streams: rotation is exercised
        var streams = prefilled.Select(x => (x.First, Tail: Drain(batcher.Add(x.Seq, [x.First.TokenId!.Value], CancellationToken.None)))).ToList();
        for (int i = 0; i < prompts.Length; i++)
        {
            var got = await Whole(streams[i].First, streams[i].Tail);
            Assert.Equal(expected[i].Ids, got.Ids);
            Assert.Equal(expected[i].Text, got.Text);
            Assert.Equal(expected[i].Finish, got.Finish);
        }
        Assert.Equal(0, batcher.Running);
    }

    /// <summary>A beam search joins the batch as a stepped job (as on a decode worker, from a cache that
    /// holds the prompt) while sampled streams run: the search equals the local one, the streams their
    /// local runs, and both advance together (the search does not wait for the streams to end).</summary>
    [SharedDataFact]
    public async Task A_beam_search_stepped_between_batched_steps_equals_the_local_search()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var prompt = tok.Encode("Once upon a time", true);
        var beams = new SamplingParameters { NumBeams = 3, N = 3, MaxTokens = 12, Seed = 1 };
        var expectedBeams = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompt, beams));
        var sampled = new SamplingParameters { Temperature = 0.8f, Seed = 5, MaxTokens = 200, IgnoreEos = true };
        var expectedSample = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompt, sampled)).Single();

        var (seq, first) = Prefill(model, tok, prompt, sampled);
        var cache = model.CreateCache(prompt.Length + beams.MaxTokens);
        KvRoom.Forward(model, prompt, cache, new float[model.Config.VocabSize]); // the prompt's KV, as prefill stores it
        int steps = 0;
        using var batcher = new ContinuousBatcher(model, maxBatch: 4, afterStep: (_, _) => Interlocked.Increment(ref steps));
        // The search is built before the stream joins, and joins right after it:
        // built in between, the 200-token stream ran a hundred steps alone first (it did in CI).
        // The batched steps are counted on the batch thread when the search's last step has run (read after
        // the await, the count also held the steps run while the test's continuation was scheduled: the whole
        // 200-token stream of this small model takes tens of milliseconds).
        int stepsWhenSearchEnded = -1;
        var steps0 = Recorded(new BeamSearch(model, tok, beams).Steps(prompt, cache, CancellationToken.None));
        var stream = Drain(batcher.Add(seq, [first.TokenId!.Value], CancellationToken.None));
        var search = await Drain(batcher.AddStepped(steps0)).WaitAsync(TimeSpan.FromMinutes(2));

        IEnumerable<IReadOnlyList<GenerationChunk>> Recorded(IEnumerable<IReadOnlyList<GenerationChunk>> inner)
        {
            foreach (var step in inner) yield return step;
            stepsWhenSearchEnded = Volatile.Read(ref steps);
        }

        var got = GenerationOutput.Collect(search);
        Assert.Equal(expectedBeams.Select(o => o.Ids), got.Select(o => o.Ids));
        Assert.Equal(expectedBeams.Select(o => o.Text), got.Select(o => o.Text));
        // The prompt's last token runs alone here (its logits are not stored with the KV), so scores agree to
        // float rounding, not bit for bit.
        for (int i = 0; i < got.Count; i++) Assert.Equal(expectedBeams[i].Score!.Value, got[i].Score!.Value, 5);
        var whole = await Whole(first, stream);
        Assert.Equal(expectedSample.Ids, whole.Ids);
        // The search ended while the stream ran (before its 199th and last step): it did not wait for it.
        Assert.InRange(stepsWhenSearchEnded, 1, 198);
    }

    [SharedDataFact]
    public async Task Cancelled_sequence_is_aborted_and_freed_within_a_step()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var p = new SamplingParameters { Temperature = 0, MaxTokens = 100_000, IgnoreEos = true, Seed = 1 };
        int steps = 0;
        var (seq, first) = Prefill(model, tok, tok.Encode("Once", true), p);
        using var batcher = new ContinuousBatcher(model, 8, afterStep: (_, _) => Interlocked.Increment(ref steps));
        using var cts = new CancellationTokenSource();
        var reader = batcher.Add(seq, [first.TokenId!.Value], cts.Token);
        for (int i = 0; i < 5; i++) await reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, batcher.Running);
        cts.Cancel();
        int stepsAtCancel = Volatile.Read(ref steps);
        var rest = await Drain(reader).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(FinishReason.Abort, rest[^1].Finish);
        Assert.Equal(0, batcher.Running);
        // Chunks produced after the cancel: at most the step already under way.
        Assert.InRange(Volatile.Read(ref steps) - stepsAtCancel, 0, 1);
    }

    [SharedDataFact]
    public async Task A_sequence_that_fails_ends_alone_and_the_others_keep_their_tokens()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        string[] prompts = ["Once upon a time", "The dog", "One day"];
        var ps = prompts.Select((_, i) => new SamplingParameters { Temperature = 0.8f, Seed = 7 + i, MaxTokens = 30, IgnoreEos = true }).ToArray();
        var expected = prompts.Select((text, i) => GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(text, true), ps[i])).Single()).ToList();

        var prefilled = prompts.Select((text, i) => Prefill(model, tok, tok.Encode(text, true), ps[i])).ToList();
        // The middle sequence's policy refuses its 8th token (prefill, the fed token, then 6 steps).
        var failing = new FailingPolicy(failOnCall: 8);
        prefilled[1].Seq.Cache.Policy = failing;
        using var batcher = new ContinuousBatcher(model, maxBatch: 3);
        var streams = prefilled.Select(x => Drain(batcher.Add(x.Seq, [x.First.TokenId!.Value], CancellationToken.None))).ToList();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => streams[1].WaitAsync(TimeSpan.FromMinutes(1)));
        Assert.Contains("refuses", error.Message);
        foreach (int i in new[] { 0, 2 })
        {
            Assert.Equal(expected[i].Ids, (await Whole(prefilled[i].First, streams[i])).Ids);
        }
        Assert.Equal(0, batcher.Running);
    }

    [SharedDataFact]
    public async Task A_joining_sequence_catches_up_inside_the_batched_steps_and_equals_its_local_run()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        // A stream that outlives the test (a window policy has no context limit); cancelled at the end.
        var running = new SamplingParameters { Temperature = 0, MaxTokens = 1_000_000, IgnoreEos = true, Seed = 1 };
        var joining = new SamplingParameters { Temperature = 0.8f, Seed = 3, MaxTokens = 5, IgnoreEos = true };
        var prompt = tok.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends and her dog.", true);
        Assert.True(prompt.Length > 30);
        var expected = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompt, joining)).Single();

        var aPrompt = tok.Encode("The dog", true);
        var a = new SequenceGeneration(model.Config, running, tok, aPrompt, model.CreateCache(64, new Cluster.Engine.Compression.WindowPolicy(64)));
        KvRoom.Forward(model, aPrompt, a.Cache, a.Logits);
        var aFirst = a.Step(TimeSpan.Zero);
        using var stopA = new CancellationTokenSource();
        // The joining sequence's cache holds the first 5 prompt tokens; the rest is its feed.
        var b = new SequenceGeneration(model.Config, joining, tok, prompt, model.CreateCache(prompt.Length + joining.MaxTokens));
        KvRoom.Forward(model, prompt[..5], b.Cache, b.Logits);
        var sizes = new List<int>();
        using var batcher = new ContinuousBatcher(model, maxBatch: 4, afterStep: (size, _) => { lock (sizes) sizes.Add(size); });
        var aStream = Drain(batcher.Add(a, [aFirst.TokenId!.Value], stopA.Token));
        while (batcher.Running == 0) await Task.Delay(1); // a is running
        var got = GenerationOutput.Collect(await Drain(batcher.Add(b, prompt[5..], CancellationToken.None)).WaitAsync(TimeSpan.FromMinutes(1))).Single();
        stopA.Cancel();
        Assert.Equal(FinishReason.Abort, (await aStream.WaitAsync(TimeSpan.FromSeconds(30)))[^1].Finish);

        Assert.Equal(expected.Ids, got.Ids);
        // The feed shared every step with the running stream (before: it ran alone while a waited), and
        // caught up in segments of the rows the pass had left (4 - 2 = 2 more: 3 fed tokens a step) instead
        // of one token a step; then b sampled its other 4 tokens one a step. Exact on stories260K's fp32
        // weights (ExactRows 32), as the tokens above show.
        int feed = prompt.Length - 5, shared;
        Assert.True(model.ExactRows >= 4);
        lock (sizes) shared = sizes.Count(n => n == 2);
        Assert.Equal((feed + 2) / 3 + joining.MaxTokens - 1, shared);
    }

    [SharedDataFact]
    public async Task A_sequence_whose_sampling_throws_ends_alone_and_the_batch_thread_goes_on()
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var p = new SamplingParameters { Temperature = 0.7f, Seed = 2, MaxTokens = 40, IgnoreEos = true };
        var prompt = tok.Encode("Once upon a time", true);
        var expected = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompt, p)).Single();
        // An output that already ended (its last token replayed): sampling it again throws on the batch thread.
        var ended = new SequenceGeneration(model.Config, p with { MaxTokens = 2 }, tok, prompt, model.CreateCache(64));
        KvRoom.Forward(model, prompt, ended.Cache, ended.Logits);
        var endedIds = expected.Ids.Take(2).ToArray();
        foreach (var id in endedIds) ended.Replay(id);
        var (good, first) = Prefill(model, tok, prompt, p);
        using var batcher = new ContinuousBatcher(model, maxBatch: 4);
        var failing = Drain(batcher.Add(ended, [endedIds[1]], CancellationToken.None));
        var goodStream = Drain(batcher.Add(good, [first.TokenId!.Value], CancellationToken.None));
        await Assert.ThrowsAsync<InvalidOperationException>(() => failing.WaitAsync(TimeSpan.FromMinutes(1)));
        Assert.Equal(expected.Ids, (await Whole(first, goodStream)).Ids);
    }

    [SharedDataTheory]
    [InlineData(Cluster.Engine.Kernels.WeightType.F32, "dense")]
    [InlineData(Cluster.Engine.Kernels.WeightType.F32, "sink_window(4,48)")]
    [InlineData(Cluster.Engine.Kernels.WeightType.Q8_0, "sink_window(4,48)")]
    [InlineData(Cluster.Engine.Kernels.WeightType.BF16, "window(40)")]
    public async Task A_restart_catching_up_in_segments_continues_with_the_local_tokens(Cluster.Engine.Kernels.WeightType weights, string policy)
    {
        // A stream restarted from its prompt's KV re-runs its 50 streamed tokens before sampling the 51st:
        // in segments while the pass has rows to spare and the policy would not evict inside one (the
        // budget is crossed mid-feed: from there one token a step), in passes no larger than the weights'
        // kernels keep row-exact (bf16 rows are exact up to 32 a pass: CpuBackend.RowExactRows). Either way, the local tokens.
        using var model = Cluster.Engine.Loaders.ModelLoader.Load(TestModels.Stories260K, new Cluster.Engine.Kernels.CpuBackend(), weights: weights);
        var tok = TestModels.Stories260KTokenizer();
        var p = new SamplingParameters { Temperature = 0.9f, TopK = 40, Seed = 17, MaxTokens = 80, IgnoreEos = true };
        var prompt = tok.Encode("Once upon a time, there was a little girl named Lily.", true);
        var expected = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompt, p, policy: Cluster.Engine.Compression.KvPolicyRegistry.Parse(policy))).Single();

        var seq = new SequenceGeneration(model.Config, p, tok, prompt, model.CreateCache(prompt.Length + p.MaxTokens, Cluster.Engine.Compression.KvPolicyRegistry.Parse(policy)));
        KvRoom.Forward(model, prompt, seq.Cache, seq.Logits);
        int[] streamed = [.. expected.Ids.Take(50)];
        foreach (var id in streamed) seq.Replay(id);
        int steps = 0;
        using var batcher = new ContinuousBatcher(model, maxBatch: 8, afterStep: (_, _) => Interlocked.Increment(ref steps));
        var rest = GenerationOutput.Collect(await Drain(batcher.Add(seq, streamed, CancellationToken.None)).WaitAsync(TimeSpan.FromMinutes(1))).Single();

        Assert.Equal(expected.Ids.Skip(50), rest.Ids);
        // 30 sampling steps after the feed; the feed took fewer steps than tokens exactly when segments ran.
        int feedSteps = Volatile.Read(ref steps) - 29;
        if (model.ExactRows > 1) Assert.InRange(feedSteps, 1, streamed.Length - 1);
        else Assert.Equal(streamed.Length, feedSteps);
    }

    /// <summary>A dense "policy" that throws on its n-th BeforeAppend: a sequence that cannot take its token.</summary>
    private sealed class FailingPolicy(int failOnCall) : Cluster.Engine.Compression.KvCompressionPolicy
    {
        private int _calls;

        public override int? Budget => null;
        public override string Name => "failing";

        public override void BeforeAppend(LlamaModel model, Cluster.Engine.KvCache.SequenceKvCache cache, int incoming)
        {
            if (++_calls >= failOnCall) throw new InvalidOperationException($"this sequence's policy refuses token {_calls}");
        }

        protected override void Score(in Cluster.Engine.Compression.SlotView view, Span<float> scores) { }
    }
}
