using Cluster.Serving.Routing;
using Grpc.Net.Client;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using FinishReason = LlmCluster.V1.FinishReason;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Multi-turn sessions (issue 12): each turn sends only its new tokens, the cluster continues
/// on the session's stored KV, and the tokens equal a local <see cref="Conversation"/> turn for turn.</summary>
public sealed class ConversationTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    private static readonly string[] Lines =
    [
        "Once upon a time, there was a little girl named Lily.", "She went to the park.", "Then what happened?",
        "The dog was happy.", "Tom said hello.", "They played all day.", "What did mom say?", "The sun was big and warm.",
    ];

    /// <summary>Turn t's prompt: BOS only on the first turn, as a chat client sends it.</summary>
    public static int[] TurnPrompt(ITokenizer tokenizer, int turn) => tokenizer.Encode(Lines[turn % Lines.Length], addBos: turn == 0);

    public static SamplingParameters TurnParams(int turn, int maxTokens = 12) => new() { Temperature = 0.8f, TopP = 0.95f, Seed = 1000 + turn, MaxTokens = maxTokens };

    public static GenerateRequest TurnRequest(string session, int[] prompt, SamplingParameters p, string policy) => new()
    {
        SessionId = session,
        TokenIds = new TokenIds { Ids = { prompt } },
        Sampling = SamplingWire.FromEngine(p),
        KvPolicy = PolicyMapping.ToWire(policy),
    };

    private KvCompressionPolicy LocalPolicy(string policy) => KvPolicyRegistry.Parse(policy, new PolicyOptions(f.Filters));

    [SharedDataTheory]
    [InlineData("sink_window(4,252)", 30)]
    [InlineData("sink_window(4,60)", 30)]
    [InlineData("qfilters(64,16)", 20)]
    public async Task Every_turn_equals_the_local_conversation(string policy, int turns)
    {
        using var local = new Conversation(f.Local, LocalPolicy(policy), f.Tokenizer);
        long residentHits = f.Cluster.DecodeService.ResidentHits;
        string session = ""; // the first turn starts the session; the gateway names it
        for (int t = 0; t < turns; t++)
        {
            var prompt = TurnPrompt(f.Tokenizer, t);
            var expected = GenerationOutput.Collect(local.Turn(prompt, TurnParams(t).WithResolvedSeed())).Single();
            var got = await f.Cluster.GenerateAsync(TurnRequest(session, prompt, TurnParams(t), policy));
            if (t == 0) session = got.SessionId;
            Assert.Equal(session, got.SessionId);
            Assert.Equal(t == 0 ? session : $"{session}/{t}", got.TurnId);
            Assert.True(expected.Ids.SequenceEqual(got.Ids), $"turn {t}: expected [{string.Join(',', expected.Ids)}], got [{string.Join(',', got.Ids)}]");
            Assert.Equal(expected.Text, got.Text);
            if (t == 2) Assert.Equal(got.Ids, (await f.Cluster.ResumeAsync(got.TurnId, -1)).Ids); // each turn keeps its own log
        }
        Assert.True(local.TokensSeen > 256, $"the conversation must outgrow the budget ({local.TokensSeen} tokens)");
        // KV-aware routing: every later turn ran on the decode worker that kept the conversation's KV.
        Assert.Equal(residentHits + turns - 1, f.Cluster.DecodeService.ResidentHits);
    }

    /// <summary>Where a later turn's prompt runs (issue 17, KV-aware routing): "prefill" on a prefill
    /// worker (--max-local-prefill 0), "decode" on a decode worker that keeps no finished KV and fetches
    /// it (--resident-kv 0), "resident" on the decode worker that kept it (the defaults).</summary>
    private Task<TestCluster> StartRoutedAsync(string policy, string route) => TestCluster.StartAsync(f.ModelPath, policy, qfilters: f.FiltersPath,
        gatewayOptions: route == "prefill" ? ["--max-local-prefill", "0"] : null,
        decodeOptions: route == "decode" ? ["--resident-kv", "0"] : null);

    /// <summary>Rebuilds on the worker that runs later turns' prompts on <paramref name="route"/> (none
    /// elsewhere).</summary>
    private static long Rebuilds(TestCluster cluster, string route)
    {
        var prefill = ((Cluster.Prefill.PrefillService)cluster.Prefill.Service).KvRebuilds;
        var decode = cluster.DecodeService.KvRebuilds;
        Assert.Equal(0, route == "prefill" ? decode : prefill);
        return route == "prefill" ? prefill : decode;
    }

    /// <summary>The cache manager is a cache (issue 21): when it has lost a conversation's KV between
    /// turns (restart without spill, eviction), the worker that runs the next turn's prompt rebuilds the
    /// history from the session store's recipe of the earlier turns and the conversation goes on with the
    /// same tokens; the decode worker that kept the KV needs nothing from the cache manager.</summary>
    [SharedDataTheory]
    [InlineData("dense", "prefill")]
    [InlineData("sink_window(4,60)", "prefill")]
    [InlineData("qfilters(64,16)", "prefill")]
    [InlineData("dense", "decode")]
    [InlineData("sink_window(4,60)", "decode")]
    [InlineData("qfilters(64,16)", "decode")]
    [InlineData("sink_window(4,60)", "resident")]
    public async Task A_conversation_goes_on_with_its_tokens_after_the_cache_manager_lost_its_KV(string policy, string route)
    {
        const int turns = 6, lostBefore = 3;
        await using var cluster = await StartRoutedAsync(policy, route);
        using var local = new Conversation(f.Local, LocalPolicy(policy), f.Tokenizer);
        string session = "";
        for (int t = 0; t < turns; t++)
        {
            long rebuilds = Rebuilds(cluster, route);
            if (t == lostBefore)
            {
                using var cm = GrpcChannels.Create(cluster.CacheManager.GrpcAddress);
                Assert.True((await new LlmCluster.V1.CacheManager.CacheManagerClient(cm).ReleaseAsync(new ReleaseRequest { SessionId = session })).Released);
            }
            var prompt = TurnPrompt(f.Tokenizer, t);
            var expected = GenerationOutput.Collect(local.Turn(prompt, TurnParams(t).WithResolvedSeed())).Single();
            var got = await cluster.GenerateAsync(TurnRequest(session, prompt, TurnParams(t), policy));
            if (t == 0) session = got.SessionId;
            Assert.True(expected.Ids.SequenceEqual(got.Ids), $"turn {t}: expected [{string.Join(',', expected.Ids)}], got [{string.Join(',', got.Ids)}]");
            Assert.Equal(t == lostBefore && route != "resident" ? rebuilds + 1 : rebuilds, Rebuilds(cluster, route));
        }
        Assert.Equal(route == "resident" ? turns - 1 : 0, cluster.DecodeService.ResidentHits);
    }

    /// <summary>With the cache manager down for good, every later turn is rebuilt where its prompt runs:
    /// prefill from the recipe, and decode (which cannot fetch what prefill could not store) from the
    /// recipe plus the turn's fed tokens; or a decode worker that kept the KV goes on from it. Slower,
    /// never a failed or altered turn; resuming a turn works too.</summary>
    [SharedDataTheory]
    [InlineData("dense", "prefill")]
    [InlineData("sink_window(4,60)", "prefill")]
    [InlineData("dense", "decode")]
    [InlineData("sink_window(4,60)", "decode")]
    [InlineData("sink_window(4,60)", "resident")]
    public async Task A_conversation_goes_on_with_its_tokens_while_the_cache_manager_is_down(string policy, string route)
    {
        const int turns = 5, downAfter = 1;
        await using var cluster = await StartRoutedAsync(policy, route);
        var prefill = (Cluster.Prefill.PrefillService)cluster.Prefill.Service;
        using var local = new Conversation(f.Local, LocalPolicy(policy), f.Tokenizer);
        string session = "";
        for (int t = 0; t < turns; t++)
        {
            var prompt = TurnPrompt(f.Tokenizer, t);
            var expected = GenerationOutput.Collect(local.Turn(prompt, TurnParams(t).WithResolvedSeed())).Single();
            var got = await cluster.GenerateAsync(TurnRequest(session, prompt, TurnParams(t), policy));
            if (t == 0) session = got.SessionId;
            Assert.True(expected.Ids.SequenceEqual(got.Ids), $"turn {t}: expected [{string.Join(',', expected.Ids)}], got [{string.Join(',', got.Ids)}]");
            if (t > downAfter) Assert.Equal(expected.Ids, (await cluster.ResumeAsync(got.TurnId, -1)).Ids);
            if (t == downAfter) await cluster.CacheManager.DisposeAsync();
        }
        if (route == "prefill")
        {
            Assert.Equal(turns - 1 - downAfter, prefill.KvRebuilds);
            Assert.True(cluster.DecodeService.KvRebuilds >= turns - 1 - downAfter, $"decode rebuilt {cluster.DecodeService.KvRebuilds} times");
        }
        else
        {
            Assert.Equal(0, prefill.KvRebuilds);
            Assert.Equal(route == "decode" ? turns - 1 - downAfter : 0, cluster.DecodeService.KvRebuilds);
            Assert.Equal(route == "resident" ? turns - 1 : 0, cluster.DecodeService.ResidentHits);
        }
    }

    [SharedDataFact]
    public async Task A_session_continues_after_the_decode_worker_of_its_last_turn_was_killed()
    {
        const string policy = "sink_window(4,60)";
        const int turns = 8, killAfter = 4;
        await using var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        string cmAddress = cm.GrpcAddress.ToString();
        await using var prefill = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Prefill, "--model", f.ModelPath, "--cache-manager", cmAddress), Cluster.Prefill.PrefillService.CreateAsync);
        using var decodeA = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", f.ModelPath, "--cache-manager", cmAddress, "--threads", "1");
        using var decodeB = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", f.ModelPath, "--cache-manager", cmAddress, "--threads", "1");
        await using var gateway = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Gateway, "--model", f.ModelPath, "--cache-manager", cmAddress,
            "--prefill", prefill.GrpcAddress.ToString(), "--decode", $"{decodeA.GrpcAddress},{decodeB.GrpcAddress}"), Cluster.Gateway.GatewayService.CreateAsync);
        using var client = GrpcChannels.Create(gateway.GrpcAddress);

        using var local = new Conversation(f.Local, LocalPolicy(policy), f.Tokenizer);
        string session = "";
        for (int t = 0; t < turns; t++)
        {
            var prompt = TurnPrompt(f.Tokenizer, t);
            var expected = GenerationOutput.Collect(local.Turn(prompt, TurnParams(t).WithResolvedSeed())).Single();
            double before = t == killAfter ? await decodeA.GaugeAsync("llm_generation_tokens_total") : 0;
            var got = await TestCluster.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(client).Generate(TurnRequest(session, prompt, TurnParams(t), policy)), default, null);
            if (t == 0) session = got.SessionId;
            Assert.Equal(expected.Ids, got.Ids);
            if (t != killAfter) continue;
            // SIGKILL the worker that decoded this turn: the next turns must not need it.
            (await decodeA.GaugeAsync("llm_generation_tokens_total") > before ? decodeA : decodeB).Kill();
        }
    }

    [SharedDataFact]
    public async Task Sessions_are_listed_with_their_turns_and_deleting_one_releases_its_KV()
    {
        string session = "";
        for (int t = 0; t < 3; t++)
            session = (await f.Cluster.GenerateAsync(TurnRequest(session, TurnPrompt(f.Tokenizer, t), TurnParams(t), "sink_window(4,60)"))).SessionId;
        var listed = await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).ListSessionsAsync(new ListSessionsRequest());
        var mine = Assert.Single(listed.Sessions, s => s.SessionId == session);
        Assert.Equal(3, mine.Turns);
        Assert.DoesNotContain(listed.Sessions, s => s.SessionId.StartsWith(session + "/", StringComparison.Ordinal));

        var deleted = await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).DeleteSessionAsync(new DeleteSessionRequest { SessionId = session });
        Assert.True(deleted.Deleted);
        Assert.True(deleted.KvReleased);
        Assert.DoesNotContain((await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).ListSessionsAsync(new ListSessionsRequest())).Sessions, s => s.SessionId == session);
        var replay = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.ResumeAsync($"{session}/2", -1));
        Assert.Equal(StatusCode.NotFound, replay.StatusCode);
        Assert.False((await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).DeleteSessionAsync(new DeleteSessionRequest { SessionId = session })).Deleted);
    }

    [SharedDataFact]
    public async Task Abort_by_the_session_id_stops_a_later_turn_and_the_next_turn_runs_or_is_refused_clearly()
    {
        const string policy = "sink_window(4,60)";
        string session = (await f.Cluster.GenerateAsync(TurnRequest("", TurnPrompt(f.Tokenizer, 0), TurnParams(0), policy))).SessionId;
        var longTurn = TurnParams(1, maxTokens: 100_000) with { IgnoreEos = true };
        bool aborted = false;
        var stopped = await f.Cluster.GenerateAsync(TurnRequest(session, TurnPrompt(f.Tokenizer, 1), longTurn, policy), onChunk: async s =>
        {
            if (aborted || s.Ids.Count < 40) return;
            aborted = true;
            Assert.True((await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).AbortAsync(new AbortRequest { SessionId = session })).Aborted); // by the session's id
        });
        Assert.Equal(FinishReason.Abort, stopped.Finish);
        // The next turn feeds the aborted turn's tokens after the newest checkpoint the gateway logged.
        // Checkpoints written after the gateway stopped reading can push that version out of the cache
        // manager's last three; the turn is then refused clearly, never run on the wrong KV.
        try
        {
            var next = await f.Cluster.GenerateAsync(TurnRequest(session, TurnPrompt(f.Tokenizer, 2), TurnParams(2), policy));
            Assert.Equal($"{session}/2", next.TurnId);
            Assert.NotEmpty(next.Ids);
            Assert.NotEqual(FinishReason.Abort, next.Finish);
        }
        catch (RpcException e)
        {
            Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
            Assert.Contains("stored KV holds", e.Message);
        }
    }

    private static async Task<List<int>> Collect(AsyncServerStreamingCall<GenerateResponse> call)
    {
        using var _ = call;
        var ids = new List<int>();
        await foreach (var r in call.ResponseStream.ReadAllAsync(default))
            if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk) ids.AddRange(r.Chunk.TokenIds);
        return ids;
    }


    [SharedDataFact]
    public async Task Dense_refuses_the_turn_that_would_pass_the_context_with_a_clear_error()
    {
        using var local = new Conversation(f.Local, new Cluster.Engine.Compression.DensePolicy(), f.Tokenizer);
        string session = "";
        for (int t = 0; ; t++)
        {
            var prompt = TurnPrompt(f.Tokenizer, t);
            var p = TurnParams(t, maxTokens: 40);
            var request = TurnRequest(session, prompt, p, "dense");
            List<GenerationChunk> chunks;
            try
            {
                chunks = local.Turn(prompt, p.WithResolvedSeed());
            }
            catch (ContextExceededException)
            {
                var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.GenerateAsync(request));
                Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
                Assert.Contains("context exhausted", e.Message);
                Assert.True(t > 3 && local.TokensSeen + prompt.Length + 1 + p.MaxTokens > f.Local.Config.MaxPositions, $"refused at turn {t}, {local.TokensSeen} tokens");
                return;
            }
            var got = await f.Cluster.GenerateAsync(request);
            session = got.SessionId;
            Assert.Equal(GenerationOutput.Collect(chunks).Single().Ids, got.Ids);
        }
    }

    /// <summary>A decode worker starts only a conversation's later turn itself, with one output and no
    /// tokens yet; anything else asked of start_turn is bad input, named.</summary>
    [SharedDataTheory]
    [InlineData(0, 0, "", "history_token_count > 0")]
    [InlineData(40, 1, "", "generated_token_ids must be empty")]
    [InlineData(40, 0, "s#1", "checkpoint_session_id must be empty")]
    public async Task Start_turn_requests_that_are_not_a_later_turn_are_refused(int history, int generated, string checkpointSession, string message)
    {
        using var channel = GrpcChannels.Create(f.Cluster.Decode.GrpcAddress);
        var request = new DecodeRequest
        {
            Kv = new KvHandle { SessionId = "start-" + Guid.NewGuid().ToString("N"), Policy = PolicyMapping.ToWire("dense") },
            Sampling = SamplingWire.FromEngine(TurnParams(1).WithResolvedSeed()),
            PromptTokenIds = { TurnPrompt(f.Tokenizer, 1) },
            HistoryTokenCount = history,
            CheckpointSessionId = checkpointSession,
            StartTurn = true,
        };
        if (generated > 0) request.GeneratedTokenIds.Add(5);
        using var call = new LlmCluster.V1.Decode.DecodeClient(channel).Decode(request);
        var e = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in call.ResponseStream.ReadAllAsync()) { } });
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(message, e.Status.Detail);
    }

    [SharedDataFact]
    public async Task An_unknown_session_id_is_not_found_never_a_new_session()
    {
        var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.GenerateAsync(TurnRequest("no-such-session", TurnPrompt(f.Tokenizer, 0), TurnParams(0), "dense")));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Contains("'no-such-session'", e.Status.Detail);
        var listed = await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).ListSessionsAsync(new ListSessionsRequest());
        Assert.DoesNotContain(listed.Sessions, s => s.SessionId == "no-such-session");
    }

    [SharedDataFact]
    public async Task Chat_messages_for_a_model_without_a_template_are_refused_clearly()
    {
        var request = new GenerateRequest { Chat = new ChatPrompt { Messages = { new ChatMessage { Role = "user", Content = "Hi" } } } };
        var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.GenerateAsync(request));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Contains("no chat_template", e.Message);
    }
}
