using Cluster.Rpc;
using Cluster.Rpc.Server;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// Gateway.Resume: replays the session's token log after <c>after_index</c>, then follows the live
/// stream until the log completes, so a client that lost its connection misses nothing and sees
/// nothing twice.
/// </summary>
internal sealed class ResumeCall(GatewayService gateway, ResumeRequest request, IServerStreamWriter<GenerateResponse> responses, ServerCallContext context)
{
    public async Task RunAsync()
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(StatusCode.InvalidArgument, "session_id is required");
        if (request.AfterIndex < -1) throw new RpcException(StatusCode.InvalidArgument, $"after_index must be -1 (from the start) or a token index, got {request.AfterIndex}");
        var session = await gateway.Sessions.GetAsync(request.SessionId, context.CancellationToken)
            ?? throw new RpcException(StatusCode.NotFound, $"no session '{request.SessionId}' (unknown, or expired after its TTL)");
        gateway.Metrics.Resumes.Add(1);
        await responses.WriteAsync(new GenerateResponse { Started = new Started { SessionId = session.Id, PromptTokens = session.PromptTokens } });
        int count = 0;
        await foreach (var entry in gateway.Sessions.FollowTokensAsync(request.SessionId, request.AfterIndex, context.CancellationToken))
        {
            await responses.WriteAsync(new GenerateResponse
            {
                Chunk = new Chunk { Index = 0, TokenIds = { entry.TokenId }, Text = entry.Text ?? "", TokenOffset = (int)entry.Index },
            });
            count++;
        }
        session = await gateway.Sessions.GetAsync(request.SessionId, context.CancellationToken) ?? session;
        await responses.WriteAsync(new GenerateResponse
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
}
