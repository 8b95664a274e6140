using System.Text.Json;
using Cluster.Engine.Sampling;
using Grpc.Core;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using LlmCluster.V1;

namespace LlmCtl;

/// <summary>`llmctl generate --endpoint URL`: streams a generation through a cluster's gateway.</summary>
internal static class RemoteGenerate
{
    /// <param name="repeat">How many times to send the request, one after another, on one channel (a
    /// benchmark's client: a new process per request spent 4.8-7.9 ms of CPU per token compiling its per-token
    /// code on the cores the decode step runs on, bench/RESULTS.md issue 17). Each prints as one request.</param>
    public static int Run(string endpoint, string prompt, Func<int, SamplingParameters> sampling, string? policy, bool json, int repeat = 1)
    {
        using var channel = GrpcChannels.Create(endpoint);
        var client = new Gateway.GatewayClient(channel);
        var info = client.GetModelInfo(new GetModelInfoRequest());
        var p = sampling(info.VocabSize);
        var request = new GenerateRequest { Text = prompt, Sampling = SamplingWire.FromEngine(p) };
        if (policy is not null) request.KvPolicy = PolicyMapping.ToWire(policy) is { PolicyCase: not KvPolicy.PolicyOneofCase.None } wire
            ? wire
            : throw new ArgumentException($"--policy '{policy}' has no wire form (dense, window(W), sink_window(S,W), qfilters(B,W), knorm(B,W))");

        int code = 0;
        for (int i = 0; i < repeat && code == 0; i++)
        {
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            if (p.Outputs > 1 || p.IsBeamSearch)
            {
                code = PrintOutputs(client.Generate(request, cancellationToken: cancel.Token), cancel, onCancel, json, p.Seed, prompt);
                continue;
            }
            code = Print(client.Generate(request, cancellationToken: cancel.Token), cancel, onCancel, json, p.Seed, echo: prompt, out int generated, out string finish);
            // The context, not --max-tokens, ended it: say so rather than look cut short for no reason.
            if (finish == "length" && generated < p.MaxTokens)
                Console.Error.WriteLine($"warning: stopped after {generated} of --max-tokens {p.MaxTokens} tokens: the prompt and output reached the model's context ({info.ContextLength} tokens); a bounded --policy such as sink_window(4,252) goes on");
        }
        return code;
    }

    /// <summary>
    /// Several outputs (--n, --best-of, --num-beams): gathered by index and printed each when the request
    /// ends, as the local command prints them (their chunks interleave on the wire).
    /// </summary>
    private static int PrintOutputs(AsyncServerStreamingCall<GenerateResponse> call, CancellationTokenSource cancel, ConsoleCancelEventHandler onCancel, bool json, long? seed, string prompt)
    {
        using var _ = call;
        var outputs = new SortedDictionary<int, (List<int> Ids, System.Text.StringBuilder Text, string Finish)>();
        (List<int> Ids, System.Text.StringBuilder Text, string Finish) For(int i) => outputs.TryGetValue(i, out var o) ? o : outputs[i] = ([], new(), "");
        string session = "";
        try
        {
            StreamReading.ForEach(call.ResponseStream, r =>
            {
                switch (r.ResponseCase)
                {
                    case GenerateResponse.ResponseOneofCase.Started:
                        session = r.Started.SessionId;
                        break;
                    case GenerateResponse.ResponseOneofCase.Chunk:
                        var o = For(r.Chunk.Index);
                        o.Ids.AddRange(r.Chunk.TokenIds);
                        o.Text.Append(r.Chunk.Text);
                        break;
                    case GenerateResponse.ResponseOneofCase.Complete:
                        outputs[r.Complete.Index] = For(r.Complete.Index) with { Finish = r.Complete.FinishReason.ToString().ToLowerInvariant() };
                        break;
                }
            }, cancel.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                session_id = session,
                seed,
                choices = outputs.Select(e => new { index = e.Key, ids = e.Value.Ids, text = e.Value.Text.ToString(), finish_reason = e.Value.Finish }),
            }));
            return 0;
        }
        foreach (var (index, o) in outputs) Console.WriteLine($"--- output {index} ({o.Finish}) ---\n{prompt}{o.Text}");
        Console.Error.WriteLine($"[session {session}; {outputs.Values.Sum(o => o.Ids.Count)} generated; finish {string.Join(",", outputs.Values.Select(o => o.Finish))}{(seed is null ? "" : $"; seed {seed}")}]");
        return 0;
    }

    /// <summary>`--resume SESSION`: Gateway.Resume, printed like a generation.</summary>
    public static int Resume(string endpoint, string sessionId, long afterIndex, bool json)
    {
        using var channel = GrpcChannels.Create(endpoint);
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        return Print(new Gateway.GatewayClient(channel).Resume(new ResumeRequest { SessionId = sessionId, AfterIndex = afterIndex }, cancellationToken: cancel.Token),
            cancel, onCancel, json, seed: null, echo: "", out _, out _);
    }

    /// <param name="echo">Printed once the gateway has accepted the request (Started), never before: a refused
    /// prompt is not echoed, so the error stands alone.</param>
    private static int Print(AsyncServerStreamingCall<GenerateResponse> call, CancellationTokenSource cancel, ConsoleCancelEventHandler onCancel, bool json, long? seed, string echo,
        out int generated, out string finishReason)
    {
        using var _ = call;
        var ids = new List<int>();
        var text = new System.Text.StringBuilder();
        string session = "", finish = "";
        Timings? timings = null;
        // The client's own time to the second token: prefill, the KV's way to the decode worker, one step.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double? second = null;
        try
        {
            StreamReading.ForEach(call.ResponseStream, r =>
            {
                switch (r.ResponseCase)
                {
                    case GenerateResponse.ResponseOneofCase.Started:
                        session = r.Started.SessionId;
                        if (!json) Console.Write(echo);
                        break;
                    case GenerateResponse.ResponseOneofCase.Chunk:
                        ids.AddRange(r.Chunk.TokenIds);
                        if (second is null && ids.Count >= 2) second = clock.Elapsed.TotalSeconds;
                        text.Append(r.Chunk.Text);
                        if (!json) Console.Write(r.Chunk.Text);
                        break;
                    case GenerateResponse.ResponseOneofCase.Complete:
                        finish = r.Complete.FinishReason.ToString().ToLowerInvariant();
                        timings = r.Complete.Timings;
                        break;
                }
            }, cancel.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                session_id = session,
                seed,
                ids,
                text = text.ToString(),
                finish_reason = finish,
                ttft_seconds = timings?.TtftSeconds,
                tpot_seconds = timings?.TpotSeconds,
                second_token_seconds = second,
                e2e_seconds = timings?.E2ESeconds,
            }));
        else
        {
            Console.WriteLine();
            Console.Error.WriteLine($"[session {session}; {ids.Count} generated; finish {finish}; TTFT {timings?.TtftSeconds * 1e3:F1} ms, TPOT {timings?.TpotSeconds * 1e3:F1} ms{(seed is null ? "" : $"; seed {seed}")}]");
        }
        generated = ids.Count;
        finishReason = finish;
        return 0;
    }
}
