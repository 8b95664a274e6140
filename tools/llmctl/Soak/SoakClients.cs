using System.Collections.Concurrent;
using System.Diagnostics;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Model;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;
using Cluster.Serving.Mapping;
using Grpc.Core;
using LlmCluster.V1;

namespace LlmCtl.Soak;

/// <summary>One finished request of the soak: when it started and ended (seconds since the load began),
/// its latencies, how many tokens it streamed, and its error ("altered" when a checked stream's tokens
/// differ from the local run; a gRPC status code name otherwise; null when it completed).</summary>
internal sealed record SoakRequestRecord(int Client, double StartSeconds, double EndSeconds, double TtftMs, double TpotMs, int Tokens, string? Error, bool Checked);

/// <summary>What one request asks for; <see cref="Expected"/> is the local run's tokens for checked ones.</summary>
internal sealed record SoakRequest(string Prompt, int MaxTokens, string Policy, float Temperature, float TopP, long Seed, bool IgnoreEos)
{
    public int[]? Expected { get; init; }

    public SamplingParameters Sampling => new() { Temperature = Temperature, TopP = TopP, Seed = Seed, MaxTokens = MaxTokens, IgnoreEos = IgnoreEos };

    public GenerateRequest ToWire() => new()
    {
        Text = Prompt,
        Sampling = SamplingWire.FromEngine(Sampling),
        KvPolicy = PolicyMapping.ToWire(Policy),
        ReturnText = true,
    };
}

/// <summary>
/// The soak's load: N clients, each looping until the deadline: a seeded streaming Generate with a
/// prompt, length, policy and sampling drawn from the client's own generator, read to its end, then
/// the next. Every <c>checkEvery</c>-th request of a client is one of a pool whose tokens were computed
/// locally beforehand (same seed and policy), and its stream is compared token for token.
/// </summary>
internal sealed class SoakClients(Gateway.GatewayClient gateway, IReadOnlyList<SoakRequest> checkedPool, int seed, int checkEvery)
{
    private static readonly string[] Prompts =
    [
        "Once upon a time",
        "The little dog",
        "One day, Lily went to the park",
        "Tom had a red ball",
        "The sun was hot and",
        "Once upon a time, there was a little girl named Sue. She liked to play with her toys in the garden. One day, she found a big box",
        "The bird sat on the tree and sang a song. The cat looked up and",
        "Ben and Mia were friends. They liked to go to the beach together. One morning, Ben said to Mia, \"Let's build a big sand castle!\" Mia smiled and",
        "A",
        "There was a big, scary monster under the bed. Every night, Timmy",
    ];

    private static readonly string[] Policies = ["dense", "window(64)", "sink_window(4,60)"];
    private static readonly int[] Lengths = [8, 16, 32, 64, 128, 200, 300];

    public ConcurrentQueue<SoakRequestRecord> Records { get; } = new();

    /// <summary>A request drawn from <paramref name="r"/>: the variety a mixed workload has.</summary>
    public static SoakRequest Draw(Random r) => new(
        Prompts[r.Next(Prompts.Length)],
        Lengths[r.Next(Lengths.Length)],
        Policies[r.Next(Policies.Length)],
        r.Next(3) switch { 0 => 0f, 1 => 0.8f, _ => 1f },
        r.Next(2) == 0 ? 1f : 0.95f,
        r.NextInt64(1, long.MaxValue),
        r.Next(4) != 0);

    /// <summary>The pool of checked requests with the local run's tokens (IgnoreEos, so every stream has its full length).</summary>
    public static List<SoakRequest> CheckedPool(LlamaModel model, ITokenizer tokenizer, int count, int seed)
    {
        var r = new Random(seed);
        var pool = new List<SoakRequest>();
        for (int i = 0; i < count; i++)
        {
            var q = Draw(r) with { IgnoreEos = true };
            var ids = GenerationOutput.Collect(new TextGenerator(model, tokenizer).Generate(tokenizer.Encode(q.Prompt, true), q.Sampling, policy: KvPolicyRegistry.Parse(q.Policy))).Single().Ids;
            pool.Add(q with { Expected = [.. ids] });
        }
        return pool;
    }

    /// <summary>Runs <paramref name="clients"/> loops until <paramref name="until"/> (each finishes the stream it is in).</summary>
    public Task RunAsync(int clients, Stopwatch clock, TimeSpan until, CancellationToken abort) =>
        Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(() => ClientAsync(c, clock, until, abort))));

    private async Task ClientAsync(int client, Stopwatch clock, TimeSpan until, CancellationToken abort)
    {
        var r = new Random(seed * 1000 + client);
        for (int k = 0; clock.Elapsed < until && !abort.IsCancellationRequested; k++)
        {
            bool check = checkEvery > 0 && k % checkEvery == 0;
            var request = check ? checkedPool[(client + k / checkEvery) % checkedPool.Count] : Draw(r);
            Records.Enqueue(await OneAsync(client, request, check, clock, abort));
        }
    }

    private async Task<SoakRequestRecord> OneAsync(int client, SoakRequest request, bool check, Stopwatch clock, CancellationToken abort)
    {
        double start = clock.Elapsed.TotalSeconds, first = double.NaN, last = double.NaN;
        var got = new List<int>();
        string? error = null;
        try
        {
            // A deadline far above any stream's time here: a stream that hangs becomes an error, not a stall.
            using var call = gateway.Generate(request.ToWire(), deadline: DateTime.UtcNow.AddMinutes(3), cancellationToken: abort);
            bool complete = false;
            await foreach (var m in call.ResponseStream.ReadAllAsync(abort))
            {
                if (m.ResponseCase == GenerateResponse.ResponseOneofCase.Complete) complete = true;
                if (m.ResponseCase != GenerateResponse.ResponseOneofCase.Chunk || m.Chunk.TokenIds.Count == 0) continue;
                double now = clock.Elapsed.TotalSeconds;
                if (double.IsNaN(first)) first = now;
                last = now;
                got.AddRange(m.Chunk.TokenIds);
            }
            if (!complete) error = "ended-without-complete";
            else if (check && !got.SequenceEqual(request.Expected!)) error = "altered";
        }
        catch (RpcException e) { error = e.StatusCode.ToString(); }
        double end = clock.Elapsed.TotalSeconds;
        double ttft = double.IsNaN(first) ? double.NaN : (first - start) * 1e3;
        // Time per output token after the first (vLLM's TPOT): the stream's remaining time over its remaining tokens.
        double tpot = got.Count > 1 ? (last - first) * 1e3 / (got.Count - 1) : double.NaN;
        return new SoakRequestRecord(client, start, end, ttft, tpot, got.Count, error, check);
    }
}
