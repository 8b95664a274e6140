using Grpc.Net.Client;
using System.Diagnostics;
using Grpc.Core;
using LlmCluster.V1;

namespace LlmCtl.Load;

/// <summary>What `llmctl bench load` sends: <see cref="Requests"/> requests, at most <see cref="Concurrency"/> at once.</summary>
public sealed record LoadOptions(int Concurrency, int Requests, int PromptTokens = 32, int MaxTokens = 64, double TtftSloSeconds = 1.0, double TpotSloSeconds = 0.1, ulong Seed = 1)
{
    public void Validate()
    {
        if (Concurrency < 1) throw new ArgumentException($"--concurrency must be at least 1, got {Concurrency}");
        if (Requests < 1) throw new ArgumentException($"--requests must be at least 1, got {Requests}");
        if (PromptTokens < 1) throw new ArgumentException($"--prompt-tokens must be at least 1, got {PromptTokens}");
        if (MaxTokens < 2) throw new ArgumentException($"--max-tokens must be at least 2 (TPOT needs two tokens), got {MaxTokens}");
        if (TtftSloSeconds <= 0 || TpotSloSeconds <= 0) throw new ArgumentException("--ttft-slo-ms and --tpot-slo-ms must be positive");
    }
}

/// <summary>
/// One request as the client saw it, measured like the gateway measures it (docs/METRICS.md) but
/// from the call's start: TTFT to the first chunk with tokens, one ITL sample per gap between two
/// such chunks, TPOT = (e2e - TTFT) / (tokens - 1). <see cref="Error"/> is the status of a failed call.
/// </summary>
public sealed record RequestSample(double TtftSeconds, double E2eSeconds, double[] ItlSeconds, int OutputTokens, StatusCode? Error)
{
    public double? TpotSeconds => OutputTokens > 1 ? (E2eSeconds - TtftSeconds) / (OutputTokens - 1) : null;
}

/// <summary>
/// The measuring core of `llmctl bench load` (a closed loop: each of C workers sends its next
/// request when the previous one ends), callable in-process by tests.
/// </summary>
public static class LoadGenerator
{
    /// <param name="progress">Called with the number of finished requests after each one.</param>
    public static async Task<LoadReport> RunAsync(GrpcChannel channel, LoadOptions options, Action<int>? progress = null, CancellationToken ct = default)
    {
        options.Validate();
        var gateway = new Gateway.GatewayClient(channel);
        var info = await gateway.GetModelInfoAsync(new GetModelInfoRequest(), cancellationToken: ct);
        var samples = new RequestSample[options.Requests];
        int next = -1, finished = 0;
        var clock = Stopwatch.StartNew();
        async Task Worker()
        {
            for (int i; (i = Interlocked.Increment(ref next)) < options.Requests;)
            {
                samples[i] = await OneAsync(gateway, Request(options, info.VocabSize, i), ct);
                progress?.Invoke(Interlocked.Increment(ref finished));
            }
        }
        await Task.WhenAll(Enumerable.Range(0, Math.Min(options.Concurrency, options.Requests)).Select(_ => Task.Run(Worker, ct)));
        return new LoadReport(options, samples, clock.Elapsed.TotalSeconds);
    }

    /// <summary>A random prompt of token ids (no tokenizer on the client) and exactly MaxTokens out: EOS is ignored so every request does the same work.</summary>
    private static GenerateRequest Request(LoadOptions o, int vocab, int index)
    {
        var rng = new Random(unchecked((int)(o.Seed * 16777619UL ^ (ulong)index))); // not HashCode.Combine: it is randomized per process
        var request = new GenerateRequest
        {
            TokenIds = new TokenIds(),
            Sampling = new SamplingParams { MaxTokens = o.MaxTokens, IgnoreEos = true, Seed = o.Seed + (ulong)index },
        };
        for (int t = 0; t < o.PromptTokens; t++) request.TokenIds.Ids.Add(rng.Next(3, Math.Max(4, vocab)));
        return request;
    }

    private static async Task<RequestSample> OneAsync(Gateway.GatewayClient gateway, GenerateRequest request, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        double? first = null, last = null;
        var gaps = new List<double>();
        int tokens = 0;
        try
        {
            using var call = gateway.Generate(request, cancellationToken: ct);
            await foreach (var r in call.ResponseStream.ReadAllAsync(ct))
            {
                if (r.ResponseCase != GenerateResponse.ResponseOneofCase.Chunk || r.Chunk.TokenIds.Count == 0) continue;
                double now = clock.Elapsed.TotalSeconds;
                first ??= now;
                if (last is { } l) gaps.Add(now - l);
                last = now;
                tokens += r.Chunk.TokenIds.Count;
            }
            return new RequestSample(first ?? clock.Elapsed.TotalSeconds, clock.Elapsed.TotalSeconds, [.. gaps], tokens, null);
        }
        catch (RpcException e) when (!ct.IsCancellationRequested)
        {
            return new RequestSample(first ?? double.NaN, clock.Elapsed.TotalSeconds, [.. gaps], tokens, e.StatusCode);
        }
    }
}
