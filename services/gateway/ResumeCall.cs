using Cluster.Sessions;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// Gateway.Resume: replays the session's token log after <c>after_index</c>, then goes on live: it
/// follows the stream if it is still running here, or, if it stopped unfinished (its client went
/// away, or its decode worker or gateway died), continues it from the latest KV checkpoint. The
/// client sees every token exactly once.
/// </summary>
internal sealed class ResumeCall(GatewayService gateway, ResumeRequest request, IServerStreamWriter<GenerateResponse> responses, ServerCallContext context)
{
    public async Task RunAsync()
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "session_id is required"));
        if (request.AfterIndex < -1) throw new RpcException(new Status(StatusCode.InvalidArgument, $"after_index must be -1 (from the start) or a token index, got {request.AfterIndex}"));
        var ct = context.CancellationToken;
        var session = await gateway.Sessions.GetAsync(request.SessionId, ct)
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"no session '{request.SessionId}' (unknown, or expired after its TTL)"));
        // Several outputs (n, best_of or num_beams > 1) stream side by side, each with its own log, while
        // Resume's replay and after_index follow one stream: refused rather than half served.
        if (SessionRecord.From(session) is { MultiOutput: true })
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{session.Id}' has several outputs (n, best_of or num_beams > 1): Resume follows a single output's stream; send the request again (same seed, same tokens)"));
        gateway.Metrics.Resumes.Add(1);
        await responses.WriteAsync(new GenerateResponse { Started = new Started { SessionId = session.Id, PromptTokens = session.PromptTokens } });

        // A call whose client just left is still winding down: wait for it rather than follow a
        // stream that will stop.
        for (int i = 0; i < 500 && gateway.Live.TryGetValue(session.Id, out var old) && old.IsCancellationRequested; i++)
            await Task.Delay(10, ct);
        if (gateway.Live.ContainsKey(session.Id))
        {
            await foreach (var entry in gateway.Sessions.FollowTokensAsync(session.Id, request.AfterIndex, ct)) await SendAsync(entry);
            await CompleteAsync((await gateway.Sessions.GetAsync(session.Id, ct)) ?? session);
            return;
        }

        // Not streaming anywhere here: replay the whole log, then finish or continue it.
        var logged = new List<int>();
        var page = await ReadAllAsync(session.Id, logged, ct);
        if (page.IsComplete)
        {
            await CompleteAsync((await gateway.Sessions.GetAsync(session.Id, ct)) ?? session);
            return;
        }
        var record = SessionRecord.From(session) ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{session.Id}' did not finish and lacks what continuing it needs"));
        await new GenerateCall(gateway, responses, context).ContinueAsync(record, logged, session.DecodeWorker);
    }

    /// <summary>Sends the log after after_index and collects every logged token id (the continuation replays them).</summary>
    private async Task<TokenLogPage> ReadAllAsync(string sessionId, List<int> logged, CancellationToken ct)
    {
        while (true)
        {
            var page = await gateway.Sessions.ReadTokensAsync(sessionId, logged.Count - 1, 4096, ct);
            foreach (var entry in page.Entries)
            {
                logged.Add(entry.TokenId);
                if (entry.Index > request.AfterIndex) await SendAsync(entry);
            }
            if (page.Entries.Count == 0 || page.IsComplete) return page;
        }
    }

    private Task SendAsync(TokenEntry entry) => responses.WriteAsync(new GenerateResponse
    {
        Chunk = new Chunk { Index = 0, TokenIds = { entry.TokenId }, Text = entry.Text ?? "", TokenOffset = (int)entry.Index },
    });

    private Task CompleteAsync(SessionInfo session) => responses.WriteAsync(new GenerateResponse
    {
        Complete = new Complete
        {
            FinishReason = session.FinishReason switch
            {
                "stop" => LlmCluster.V1.FinishReason.Stop,
                "length" => LlmCluster.V1.FinishReason.Length,
                "eos" => LlmCluster.V1.FinishReason.Eos,
                "abort" => LlmCluster.V1.FinishReason.Abort,
                _ => LlmCluster.V1.FinishReason.Unspecified,
            },
            Usage = new Usage { PromptTokens = session.PromptTokens, CompletionTokens = session.GeneratedTokens },
        },
    });
}
