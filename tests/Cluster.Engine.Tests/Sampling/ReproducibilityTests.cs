using Cluster.Engine.KvCache;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Same seed, same tokens: across runs, across outputs, and when resuming from step i with the same KV.</summary>
public sealed class ReproducibilityTests
{
    private static readonly int[] Prompt = [1, 75, 104, 111, 35]; // BOS + "Hello" bytes of the tiny model's byte vocabulary
    private static readonly SamplingParameters Sampled = new() { Temperature = 0.9f, TopK = 80, TopP = 0.95f, Seed = 1234, MaxTokens = 24, IgnoreEos = true };

    [Fact]
    public void The_draw_at_step_i_depends_only_on_seed_stream_and_i()
    {
        Assert.Equal(CounterRng.Uniform(5, 0, 17), CounterRng.Uniform(5, 0, 17));
        Assert.NotEqual(CounterRng.Uniform(5, 0, 17), CounterRng.Uniform(5, 0, 18));
        Assert.NotEqual(CounterRng.Uniform(5, 0, 17), CounterRng.Uniform(6, 0, 17));
        Assert.NotEqual(CounterRng.Uniform(5, 0, 17), CounterRng.Uniform(5, 1, 17));
        var state = new SamplingState(4, [], 5);
        state.Accept(0);
        state.Accept(3);
        Assert.Equal(CounterRng.Uniform(5, 0, 2), state.Uniform());
    }

    [Fact]
    public void Same_seed_gives_the_same_tokens_and_another_seed_others()
    {
        using var model = SamplingModels.Tiny();
        var g = new TextGenerator(model);
        var a = Ids(g.Generate(Prompt, Sampled));
        Assert.Equal(Sampled.MaxTokens, a.Count);
        Assert.Equal(a, Ids(g.Generate(Prompt, Sampled)));
        Assert.NotEqual(a, Ids(g.Generate(Prompt, Sampled with { Seed = 1235 })));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(9)]
    [InlineData(23)]
    public void Restarting_from_step_i_with_the_same_KV_continues_identically(int i)
    {
        using var model = SamplingModels.Tiny();
        var g = new TextGenerator(model, Cluster.Engine.Tokenizers.Llama2cTokenizer.Load(Path.Combine(SamplingModels.TinyPath, "tokenizer.bin"), 259));
        var p = Sampled with { Stop = ["\u0001never"] }; // a stop string makes text go through the matcher too
        var full = g.Generate(Prompt, p).ToList();

        foreach (var lastRun in new[] { true, false }) // the cache holds every token given, or all but the last
        {
            // The KV exactly as the uninterrupted run built it: the prompt in one pass, then one token per step.
            using var cache = model.CreateCache();
            var logits = new float[model.Config.VocabSize];
            KvRoom.Forward(model, Prompt, cache, logits);
            int run = lastRun ? i : i - 1;
            for (int s = 0; s < run; s++) KvRoom.Forward(model, [full[s].TokenId!.Value], cache, logits);

            var generated = full.Take(i).Select(c => c.TokenId!.Value).ToList();
            var resumed = g.Generate(Prompt, p, resume: new GenerationResume(cache, generated)).ToList();
            Assert.Equal(full.Skip(i).Select(c => c.TokenId), resumed.Select(c => c.TokenId));
            Assert.Equal(string.Concat(full.Skip(i).Select(c => c.Text)), string.Concat(resumed.Select(c => c.Text)));
            Assert.Equal(FinishReason.Length, resumed[^1].Finish);
        }
    }

    [Fact]
    public void N_outputs_share_the_prompt_prefill_and_each_equals_its_own_stream_alone()
    {
        using var model = SamplingModels.Tiny();
        var g = new TextGenerator(model);
        var three = GenerationOutput.Collect(g.Generate(Prompt, Sampled with { N = 3 }));
        Assert.Equal(3, three.Count);
        Assert.Equal(Ids(g.Generate(Prompt, Sampled)), three[0].Ids); // output 0 is the n = 1 output
        Assert.NotEqual(three[0].Ids, three[1].Ids);
        for (int j = 1; j < 3; j++)
        {
            // Stream j on its own: resume output j from the bare prompt cache.
            using var cache = model.CreateCache();
            KvRoom.Forward(model, Prompt, cache, new float[model.Config.VocabSize]);
            Assert.Equal(three[j].Ids, Ids(g.Generate(Prompt, Sampled, resume: new GenerationResume(cache, [], Index: j))));
        }
    }

    [Fact]
    public void Greedy_with_penalties_ends_with_the_right_finish_reasons()
    {
        using var model = SamplingModels.Tiny();
        var g = new TextGenerator(model);
        var greedy = new SamplingParameters { Temperature = 0, MaxTokens = 12, IgnoreEos = true };
        var ids = Ids(g.Generate(Prompt, greedy));
        Assert.Equal(12, ids.Count);

        var stopAt = ids[4];
        var first = ids.IndexOf(stopAt);
        var stopped = g.Generate(Prompt, greedy with { StopTokenIds = [stopAt] }).ToList();
        Assert.Equal(first + 1, stopped.Count);
        Assert.Equal(FinishReason.Stop, stopped[^1].Finish);

        var late = g.Generate(Prompt, greedy with { StopTokenIds = [stopAt], MinTokens = first + 1 }).ToList();
        Assert.True(late.Count > first + 1); // min_tokens bans the stop token at first, so the output goes on

        // logit_bias +100 on EOS makes EOS certain: finish reason eos after one token.
        var eos = g.Generate(Prompt, greedy with { IgnoreEos = false, LogitBias = new Dictionary<int, float> { [2] = 100 } }).ToList();
        Assert.Equal([2], eos.Select(c => c.TokenId!.Value));
        Assert.Equal(FinishReason.Eos, eos[^1].Finish);
    }

    [Fact]
    public void Cancellation_ends_every_output_with_abort()
    {
        using var model = SamplingModels.Tiny();
        const int maxTokens = 900; // the tiny model's 1,024 positions less the prompt
        // The batch runs ahead of the reader (as a decode worker's does), and the tiny model makes a token in
        // microseconds: a reader held off the CPU for as long as the whole answer takes (seen under load
        // with 100 tokens) reads its sixth chunk after the last was made, and there was nothing left to
        // cancel. Such a try is not a judgment; a cancellation that does nothing fails every try.
        for (int attempt = 0; attempt < 3; attempt++)
        {
            using var cts = new CancellationTokenSource();
            var chunks = new List<GenerationChunk>();
            foreach (var c in new TextGenerator(model).Generate(Prompt, Sampled with { N = 2, MaxTokens = maxTokens }, cts.Token))
            {
                chunks.Add(c);
                if (chunks.Count == 6) cts.Cancel();
            }
            var outputs = GenerationOutput.Collect(chunks);
            if (outputs.All(o => o.Finish == FinishReason.Length && o.Ids.Count == maxTokens)) continue;
            Assert.All(outputs, o => Assert.Equal(FinishReason.Abort, o.Finish));
            // An output may hold a few tokens sampled after the sixth chunk was read; each still ends with
            // abort, before max_tokens.
            Assert.All(outputs, o => Assert.InRange(o.Ids.Count, 3, maxTokens - 1));
            return;
        }
        Assert.Fail($"every output ran to max_tokens ({maxTokens}) in three tries: cancellation stopped nothing");
    }

    [Fact]
    public void Logprobs_are_the_log_softmax_of_the_raw_logits()
    {
        using var model = SamplingModels.Tiny();
        var chunk = new TextGenerator(model).Generate(Prompt, Sampled with { Logprobs = 3, MaxTokens = 1 }).Single();
        var logits = new float[model.Config.VocabSize];
        using (var cache = model.CreateCache()) KvRoom.Forward(model, Prompt, cache, logits);
        var logZ = Math.Log(logits.Sum(l => Math.Exp(l)));
        var lp = chunk.Logprobs!;
        Assert.Equal(chunk.TokenId, lp.Id);
        Assert.Equal(logits[lp.Id] - logZ, lp.Logprob, 4);
        var top3 = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).Take(3).ToArray();
        Assert.Equal(top3, lp.Top.Select(t => t.Id));
        Assert.All(lp.Top, t => Assert.Equal(logits[t.Id] - logZ, t.Logprob, 4));
    }

    private static List<int> Ids(IEnumerable<GenerationChunk> chunks) => chunks.Where(c => c.TokenId is not null).Select(c => c.TokenId!.Value).ToList();
}
