using Cluster.Serving.Routing;
using System.CommandLine;
using Grpc.Core;
using LlmCluster.V1;

namespace LlmCtl.Commands;

/// <summary><c>llmctl sessions --endpoint URL [--delete ID]</c>: lists a cluster's sessions
/// (Gateway.ListSessions), or deletes one with its KV (Gateway.DeleteSession).</summary>
internal static class SessionsCommand
{
    public static Command Create()
    {
        var endpoint = new Option<string>("--endpoint") { Description = "the cluster's gateway, e.g. http://127.0.0.1:50051", Required = true };
        var delete = new Option<string?>("--delete") { Description = "delete this session: every turn's record and log, and its KV in the cache manager" };
        var limit = new Option<int>("--limit") { Description = "list at most this many sessions", DefaultValueFactory = _ => 100 };
        var cmd = new Command("sessions", "list a cluster's sessions, or delete one") { endpoint, delete, limit };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            using var channel = GrpcChannels.Create(r.GetValue(endpoint)!);
            var client = new Gateway.GatewayClient(channel);
            if (r.GetValue(delete) is { } id)
            {
                var deleted = client.DeleteSession(new DeleteSessionRequest { SessionId = id });
                Console.WriteLine(deleted.Deleted ? $"deleted {id}{(deleted.KvReleased ? " and its KV" : " (no KV was stored)")}" : $"no session {id}");
                return deleted.Deleted ? 0 : 1;
            }
            var list = client.ListSessions(new ListSessionsRequest { Limit = r.GetValue(limit) });
            Console.WriteLine($"{"session",-34} {"turns",5} {"status",-9} {"policy",-20} updated");
            foreach (var s in list.Sessions)
                Console.WriteLine($"{s.SessionId,-34} {s.Turns,5} {s.Status,-9} {s.KvPolicy,-20} {DateTimeOffset.FromUnixTimeMilliseconds(s.UpdatedUnixMs):u}");
            return 0;
        }));
        return cmd;
    }
}
