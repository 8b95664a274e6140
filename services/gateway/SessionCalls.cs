using Grpc.Core;
using Cluster.Serving.Routing;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>Gateway.ListSessions and Gateway.DeleteSession: conversations as the session store holds
/// them (a conversation's later turns are records of their own, "<c>{session}/{turn}</c>").</summary>
internal sealed class SessionCalls(GatewayService gateway) : IDisposable
{
    private readonly ChannelCache _channels = new();

    public async Task<ListSessionsResponse> List(ListSessionsRequest request, ServerCallContext context)
    {
        if (request.Limit < 0) throw new RpcException(new Status(StatusCode.InvalidArgument, $"limit must be >= 0, got {request.Limit}"));
        int limit = request.Limit == 0 ? 100 : request.Limit;
        var response = new ListSessionsResponse();
        // Turn records are listed by the store too; ask for more and keep the conversations.
        // (A limit near int.MaxValue must not overflow the scan size to a negative one: found by `llmctl bench fuzz`.)
        foreach (var s in await gateway.Sessions.ListAsync(limit > int.MaxValue / 4 ? int.MaxValue : limit * 4, context.CancellationToken))
        {
            if (response.Sessions.Count == limit) break;
            if (SessionRecord.From(s) is { Turn: > 0 }) continue;
            response.Sessions.Add(new SessionSummary
            {
                SessionId = s.Id,
                Turns = SessionRecord.LatestTurn(s) + 1,
                Status = s.Status.ToString().ToLowerInvariant(),
                KvPolicy = s.KvPolicy,
                UpdatedUnixMs = s.UpdatedAt.ToUnixTimeMilliseconds(),
            });
        }
        return response;
    }

    public async Task<DeleteSessionResponse> Delete(DeleteSessionRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "session_id is required"));
        var ct = context.CancellationToken;
        var session = await gateway.Sessions.GetAsync(request.SessionId, ct);
        if (session is null) return new DeleteSessionResponse();
        if (SessionRecord.From(session) is { Turn: > 0 } turn)
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"'{session.Id}' is turn {turn.Turn} of session '{turn.KvSession}': delete the session"));
        int turns = SessionRecord.LatestTurn(session);
        for (int t = 0; t <= turns; t++)
            if (gateway.Live.ContainsKey(SessionRecord.TurnId(session.Id, t)))
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{session.Id}' is streaming: Abort it first"));
        for (int t = turns; t >= 1; t--) await gateway.Sessions.DeleteAsync(SessionRecord.TurnId(session.Id, t), ct);
        var cacheManager = new CacheManager.CacheManagerClient(_channels.Get(gateway.Options.CacheManager));
        // A request with several outputs has a token log and checkpoints per output besides the session's.
        if (SessionRecord.From(session) is { MultiOutput: true } multi)
        {
            for (int i = 0; i < SessionRecord.OutputCount(multi.Sampling); i++)
            {
                var output = SessionRecord.OutputId(session.Id, i);
                await gateway.Sessions.DeleteAsync(output, ct);
                await cacheManager.ReleaseAsync(new ReleaseRequest { SessionId = output }, cancellationToken: ct);
            }
        }
        bool deleted = await gateway.Sessions.DeleteAsync(session.Id, ct);
        var released = await cacheManager.ReleaseAsync(new ReleaseRequest { SessionId = session.Id }, cancellationToken: ct);
        return new DeleteSessionResponse { Deleted = deleted, KvReleased = released.Released };
    }

    public void Dispose() => _channels.Dispose();
}
