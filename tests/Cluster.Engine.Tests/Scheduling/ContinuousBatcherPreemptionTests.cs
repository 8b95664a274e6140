using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Scheduling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Scheduling;

/// <summary>
/// A paged batch whose block pool holds fewer sequences than run (vLLM's preemption by recomputation):
/// sequences are preempted, none fails, and every one's tokens equal its solo run, whether greedy,
/// seeded sampling with penalties (their state survives the preemption) or under a sink_window policy
/// (the recomputed cache evicts as the original did).
/// </summary>
public sealed class ContinuousBatcherPreemptionTests
{
    private const int BlockSize = 4;

    private sealed record Case(string Prompt, SamplingParameters P, string? Policy);

    private static readonly Case[] Cases =
    [
        new("Once upon a time", new() { Temperature = 0, MaxTokens = 48, IgnoreEos = true, Seed = 1 }, null),
        new("The dog", new() { Temperature = 0.8f, TopP = 0.9f, MaxTokens = 44, IgnoreEos = true, Seed = 7 }, null),
        new("Lily and Ben went to the park", new() { Temperature = 0.9f, RepetitionPenalty = 1.3f, PresencePenalty = 0.5f, FrequencyPenalty = 0.3f, MaxTokens = 40, IgnoreEos = true, Seed = 11 }, null),
        new("One day", new() { Temperature = 0, MaxTokens = 50, IgnoreEos = true, Seed = 2 }, "sink_window(4,12)"),
        new("A big red ball", new() { Temperature = 0.8f, TopK = 20, MaxTokens = 46, IgnoreEos = true, Seed = 13 }, "sink_window(4,12)"),
        new("Tom", new() { Temperature = 0.7f, MaxTokens = 42, IgnoreEos = true, Seed = 17 }, null),
    ];

    private static KvCompressionPolicy? Policy(string? spec) => spec is null ? null : KvPolicyRegistry.Parse(spec);

    /// <summary>The prompt's KV as the local generator makes it: a dense prefill, then the policy's bulk
    /// compression. Also the recomputation of a preempted sequence's prefix.</summary>
    private static SequenceKvCache PrefixKv(LlamaModel model, int[] prompt, KvCompressionPolicy? policy, Span<float> logits)
    {
        var cache = model.CreateCache(prompt.Length + 1);
        model.Forward(prompt, cache, logits);
        if (policy is not null)
        {
            cache.Policy = policy;
            policy.Compress(model, cache);
        }
        return cache;
    }

    [SharedDataTheory]
    [InlineData(8)] // every running sequence in each step
    [InlineData(3)] // fewer: the batch rotates, and only the scheduled ones take blocks
    public async Task A_pool_smaller_than_the_batch_preempts_and_every_sequence_keeps_its_solo_tokens(int maxBatch)
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var prompts = Cases.Select(c => tok.Encode(c.Prompt, true)).ToArray();
        var expected = Cases.Select((c, i) => GenerationOutput.Collect(new TextGenerator(model, tok).Generate(prompts[i], c.P, policy: Policy(c.Policy))).Single()).ToList();

        // 24 blocks of 4 slots: the prompts fit at once, but the dense sequences grow to 12-14 blocks each.
        var gate = new KvAdmission(numBlocks: 24, blockSize: BlockSize, blockBytes: 1, maxQueue: 8);
        var leases = new List<KvAdmission.KvLease>();
        var seqs = new List<SequenceGeneration>();
        var firsts = new List<GenerationChunk>();
        for (int i = 0; i < Cases.Length; i++)
        {
            var logits = new float[model.Config.VocabSize];
            var cache = PrefixKv(model, prompts[i], Policy(Cases[i].Policy), logits);
            var seq = new SequenceGeneration(model.Config, Cases[i].P, tok, prompts[i], cache);
            logits.CopyTo(seq.Logits, 0);
            firsts.Add(seq.Step(TimeSpan.Zero)); // the first token, as prefill samples it
            seqs.Add(seq);
            leases.Add(await gate.AcquireAsync(cache.MaxLength() + 1));
        }

        int overBlocks = 0;
        using var batcher = new ContinuousBatcher(model, maxBatch, afterStep: (_, _) =>
        {
            // On the batch thread: every running cache holds exactly its blocks, never more.
            for (int i = 0; i < seqs.Count; i++)
                if (!seqs[i].Done && !leases[i].IsPreempted && seqs[i].Cache.Capacity > leases[i].Slots) overBlocks++;
        });
        var tails = new List<Task<List<GenerationChunk>>>();
        for (int i = 0; i < Cases.Length; i++)
        {
            var (prompt, policy) = (prompts[i], Policy(Cases[i].Policy));
            tails.Add(DrainAndRelease(batcher.Add(seqs[i], [firsts[i].TokenId!.Value], CancellationToken.None, lease: leases[i],
                recompute: () => PrefixKv(model, prompt, policy, new float[model.Config.VocabSize])), leases[i]));
        }
        for (int i = 0; i < Cases.Length; i++)
        {
            var got = GenerationOutput.Collect([firsts[i], .. await tails[i].WaitAsync(TimeSpan.FromMinutes(2))]).Single();
            Assert.Equal(expected[i].Ids, got.Ids);
            Assert.Equal(expected[i].Text, got.Text);
            Assert.Equal(expected[i].Finish, got.Finish);
        }
        Assert.True(gate.Preemptions > 0, "the pool holds fewer sequences than run: some must be preempted");
        Assert.Equal(0, overBlocks);
        Assert.Equal(0, batcher.Running);
        Assert.Equal(0, batcher.Preempted);
        Assert.Equal(gate.BudgetBytes, gate.PeakBytes); // the whole pool was used, never more
        Assert.Equal(0, gate.UsedBytes);
    }

    /// <summary>Reads a stream to its end and gives its blocks back, as a decode worker's handler does
    /// (blocks held by a finished stream would keep a preempted one from resuming).</summary>
    private static async Task<List<GenerationChunk>> DrainAndRelease(System.Threading.Channels.ChannelReader<GenerationChunk> reader, KvAdmission.KvLease lease)
    {
        var list = new List<GenerationChunk>();
        try
        {
            await foreach (var c in reader.ReadAllAsync()) list.Add(c);
        }
        finally
        {
            lease.Dispose();
        }
        return list;
    }
}
