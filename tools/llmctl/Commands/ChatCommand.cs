using Cluster.Serving.Routing;
using System.CommandLine;
using Grpc.Core;
using Cluster.Serving.Mapping;
using LlmCluster.V1;

namespace LlmCtl.Commands;

/// <summary>
/// <c>llmctl chat --endpoint URL [--policy P] [--session ID]</c>: one session for the whole
/// conversation. Each line read from standard input is one turn; only that line goes to the gateway,
/// which continues the session on its stored KV (issue 12). TTFT and TPOT of each turn go to stderr.
/// Turns are sent as plain text, or with <c>--template</c> as chat messages that the gateway formats with the
/// model's chat template; the conversation so far then goes along as history (the gateway renders only the new part).
/// </summary>
internal static class ChatCommand
{
    /// <summary>A new session's policy: bounded, so that turns can go on past the context (dense refuses them).</summary>
    public const string DefaultPolicy = "sink_window(4,252)";

    public static Command Create()
    {
        var endpoint = new Option<string>("--endpoint") { Description = "the cluster's gateway, e.g. http://127.0.0.1:50051", Required = true };
        var policy = new Option<string?>("--policy") { Description = $"KV policy of a new session (default: {DefaultPolicy}, bounded so that a long conversation never exhausts the context)" };
        var session = new Option<string?>("--session") { Description = "continue this existing session (default: a new one; an unknown id is an error)" };
        var template = new Option<bool>("--template") { Description = "send turns as chat messages formatted with the model's chat template" };
        var system = new Option<string?>("--system") { Description = "with --template: a system message before the first turn" };
        var sampling = new SamplingOptions();
        var cmd = new Command("chat", "a conversation through a cluster: one line of standard input per turn, one session for all") { endpoint, policy, session, template, system };
        sampling.AddTo(cmd);
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            using var channel = GrpcChannels.Create(r.GetValue(endpoint)!);
            var client = new Gateway.GatewayClient(channel);
            var info = client.GetModelInfo(new GetModelInfoRequest());
            string id = r.GetValue(session) ?? ""; // empty: the first turn starts a session and the gateway names it
            string spec = r.GetValue(policy) ?? DefaultPolicy;
            KvPolicy wirePolicy = PolicyMapping.ToWire(spec) is { PolicyCase: not KvPolicy.PolicyOneofCase.None } w ? w : throw new ArgumentException($"--policy '{spec}' has no wire form");
            bool chat = r.GetValue(template);
            var history = new List<ChatMessage>();
            var pending = new List<ChatMessage>();
            if (r.GetValue(system) is { } sys) pending.Add(new ChatMessage { Role = "system", Content = sys });
            Console.Error.WriteLine(id.Length > 0 ? $"[session {id}; one line per turn; end with Ctrl-D]" : $"[new session, KV policy {spec}; one line per turn; end with Ctrl-D]");
            for (int turn = 0; Console.ReadLine() is { } line; turn++)
            {
                if (line.Length == 0) { turn--; continue; }
                var p = sampling.Read(r, info.VocabSize).WithResolvedSeed();
                var request = new GenerateRequest { SessionId = id, Sampling = SamplingWire.FromEngine(p) };
                if (chat)
                {
                    pending.Add(new ChatMessage { Role = "user", Content = line });
                    request.Chat = new ChatPrompt { Messages = { pending }, History = { history } };
                }
                else request.Text = line;
                if (id.Length == 0) request.KvPolicy = wirePolicy; // a session keeps the policy it started with
                Complete? done = null;
                var reply = new System.Text.StringBuilder();
                try
                {
                    using var call = client.Generate(request);
                    StreamReading.ForEach(call.ResponseStream, response =>
                    {
                        if (response.ResponseCase == GenerateResponse.ResponseOneofCase.Started) id = response.Started.SessionId;
                        else if (response.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk) { Console.Write(response.Chunk.Text); reply.Append(response.Chunk.Text); }
                        else if (response.ResponseCase == GenerateResponse.ResponseOneofCase.Complete) done = response.Complete;
                    });
                    Console.WriteLine();
                }
                catch (RpcException e) when (e.StatusCode is StatusCode.FailedPrecondition or StatusCode.InvalidArgument && reply.Length == 0)
                {
                    // A refused turn never happened: the conversation goes on from where it was.
                    Console.Error.WriteLine($"[turn refused: {e.Status.Detail}]");
                    if (chat) pending.RemoveAt(pending.Count - 1);
                    turn--;
                    continue;
                }
                if (chat)
                {
                    history.AddRange(pending);
                    history.Add(new ChatMessage { Role = "assistant", Content = reply.ToString() });
                    pending.Clear();
                }
                var t = done?.Timings;
                Console.Error.WriteLine($"[turn {turn}: {done?.Usage.PromptTokens} prompt + {done?.Usage.CompletionTokens} generated; finish {done?.FinishReason.ToString().ToLowerInvariant()}; TTFT {t?.TtftSeconds * 1e3:F1} ms, TPOT {t?.TpotSeconds * 1e3:F1} ms]");
            }
            return 0;
        }));
        return cmd;
    }
}
