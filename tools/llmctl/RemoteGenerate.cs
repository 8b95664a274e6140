using System.Text.Json;
using Cluster.Engine.Sampling;
using Cluster.Rpc.Client;
using Cluster.Serving.Mapping;
using LlmCluster.V1;

namespace LlmCtl;

/// <summary>`llmctl generate --endpoint URL`: streams a generation through a cluster's gateway.</summary>
internal static class RemoteGenerate
{
    public static int Run(string endpoint, string prompt, Func<int, SamplingParameters> sampling, string? policy, bool json)
    {
        using var channel = new RpcChannel(new Uri(endpoint));
        var info = channel.UnaryAsync(GatewayMethods.GetModelInfo, new GetModelInfoRequest()).GetAwaiter().GetResult();
        var p = sampling(info.VocabSize);
        var request = new GenerateRequest { Text = prompt, Sampling = SamplingWire.FromEngine(p) };
        if (policy is not null) request.KvPolicy = PolicyMapping.ToWire(policy) is { PolicyCase: not KvPolicy.PolicyOneofCase.None } wire
            ? wire
            : throw new ArgumentException($"--policy '{policy}' has no wire form (dense, window(W), sink_window(S,W), qfilters(B,W), knorm(B,W))");

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        var ids = new List<int>();
        var text = new System.Text.StringBuilder();
        string session = "", finish = "";
        Timings? timings = null;
        using var call = channel.ServerStreaming(GatewayMethods.Generate, request, new CallOptions(CancellationToken: cancel.Token));
        if (!json) Console.Write(prompt);
        try
        {
            foreach (var r in call.ReadAllAsync(cancel.Token).ToBlockingEnumerable())
            {
                switch (r.ResponseCase)
                {
                    case GenerateResponse.ResponseOneofCase.Started:
                        session = r.Started.SessionId;
                        break;
                    case GenerateResponse.ResponseOneofCase.Chunk:
                        ids.AddRange(r.Chunk.TokenIds);
                        text.Append(r.Chunk.Text);
                        if (!json) Console.Write(r.Chunk.Text);
                        break;
                    case GenerateResponse.ResponseOneofCase.Complete:
                        finish = r.Complete.FinishReason.ToString().ToLowerInvariant();
                        timings = r.Complete.Timings;
                        break;
                }
            }
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                session_id = session,
                seed = p.Seed,
                ids,
                text = text.ToString(),
                finish_reason = finish,
                ttft_seconds = timings?.TtftSeconds,
                tpot_seconds = timings?.TpotSeconds,
                e2e_seconds = timings?.E2ESeconds,
            }));
        else
        {
            Console.WriteLine();
            Console.Error.WriteLine($"[session {session}; {ids.Count} generated; finish {finish}; TTFT {timings?.TtftSeconds * 1e3:F1} ms, TPOT {timings?.TpotSeconds * 1e3:F1} ms; seed {p.Seed}]");
        }
        return 0;
    }
}
