using Cluster.Serving.Routing;
using Grpc.Net.Client;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Cluster.Sessions.Tests;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using LlmCluster.V1;
using FinishReason = LlmCluster.V1.FinishReason;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Sessions in Redis and resumable streams (issue 8): every token reaches the client exactly
/// once, and the text equals an uninterrupted run with the same seed.</summary>
public sealed class ResumeTests
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily.";
    private const string Policy = "sink_window(4,28)"; // a compressed cache: restarts cannot lean on recomputing everything
    private static string ModelPath => SharedData.Path_("models", "stories260K", "stories260K.bin");

    private static SamplingParameters Params(int maxTokens) => new() { Temperature = 0.8f, TopP = 0.95f, Seed = 4242, MaxTokens = maxTokens, IgnoreEos = true };

    private static GenerateRequest Request(int maxTokens) => new()
    {
        Text = Prompt,
        Sampling = SamplingWire.FromEngine(Params(maxTokens)),
        KvPolicy = PolicyMapping.ToWire(Policy),
    };

    /// <summary>The uninterrupted run, computed in this process.</summary>
    private static GenerationOutput Uninterrupted(int maxTokens)
    {
        using var model = ModelLoader.Load(ModelPath);
        var tok = ModelLoader.LoadTokenizer(ModelPath, model.Config);
        return GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(Prompt, true), Params(maxTokens), policy: KvPolicyRegistry.Parse(Policy))).Single();
    }

    [SharedDataFact]
    public async Task Killing_the_decode_worker_midway_loses_and_repeats_no_token()
    {
        await using var redis = await AppendOnlyRedis();
        const int tokens = 1500;
        var expected = Uninterrupted(tokens);

        await using var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        string cmAddress = cm.GrpcAddress.ToString();
        await using var prefill = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Prefill, "--model", ModelPath, "--cache-manager", cmAddress), Cluster.Prefill.PrefillService.CreateAsync);
        using var decodeA = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", ModelPath, "--cache-manager", cmAddress, "--checkpoint-every", "16", "--threads", "1");
        using var decodeB = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", ModelPath, "--cache-manager", cmAddress, "--checkpoint-every", "16", "--threads", "1");
        await using var gateway = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Gateway, "--model", ModelPath, "--cache-manager", cmAddress,
            "--prefill", prefill.GrpcAddress.ToString(), "--decode", $"{decodeA.GrpcAddress},{decodeB.GrpcAddress}", "--redis", $"127.0.0.1:{redis.Port}"), Cluster.Gateway.GatewayService.CreateAsync);
        using var client = GrpcChannels.Create(gateway.GrpcAddress);

        ServiceProcess? killed = null;
        var got = await TestCluster.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(client).Generate(Request(tokens)), default, async s =>
        {
            if (killed is not null || s.Ids.Count < 100) return;
            // Kill whichever worker is decoding this stream, mid-stream.
            killed = await decodeA.GaugeAsync("llm_decode_sequences_running") > 0 ? decodeA : decodeB;
            killed.Kill();
        });
        Assert.NotNull(killed);
        Assert.Equal(FinishReason.Length, got.Finish);
        Assert.Equal(expected.Ids, got.Ids); // every token once (offsets are checked as they arrive), none lost
        Assert.Equal(expected.Text, got.Text);
    }

    /// <summary>n = 2 on two decode workers: the worker of one output dies mid-stream; that output restarts
    /// on the other worker from its own checkpoints (each output checkpoints apart), and both outputs still
    /// equal the local run of their index, every token once.</summary>
    [SharedDataFact]
    public async Task Killing_a_decode_worker_midway_through_two_outputs_restarts_each_from_its_own_checkpoints()
    {
        const int tokens = 600;
        var p = Params(tokens) with { N = 2 };
        List<GenerationOutput> expected;
        using (var model = ModelLoader.Load(ModelPath))
        {
            var tok = ModelLoader.LoadTokenizer(ModelPath, model.Config);
            expected = [.. GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(Prompt, true), p, policy: KvPolicyRegistry.Parse(Policy)))];
        }

        await using var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        string cmAddress = cm.GrpcAddress.ToString();
        await using var prefill = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Prefill, "--model", ModelPath, "--cache-manager", cmAddress), Cluster.Prefill.PrefillService.CreateAsync);
        using var decodeA = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", ModelPath, "--cache-manager", cmAddress, "--checkpoint-every", "16", "--threads", "1");
        using var decodeB = await ServiceProcess.StartAsync("Cluster.Decode.dll", "--model", ModelPath, "--cache-manager", cmAddress, "--checkpoint-every", "16", "--threads", "1");
        await using var gateway = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Gateway, "--model", ModelPath, "--cache-manager", cmAddress,
            "--prefill", prefill.GrpcAddress.ToString(), "--decode", $"{decodeA.GrpcAddress},{decodeB.GrpcAddress}"), Cluster.Gateway.GatewayService.CreateAsync);
        using var client = GrpcChannels.Create(gateway.GrpcAddress);

        ServiceProcess? killed = null;
        var request = new GenerateRequest { Text = Prompt, Sampling = SamplingWire.FromEngine(p), KvPolicy = PolicyMapping.ToWire(Policy) };
        var got = await MultiOutputStream.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(client).Generate(request), onChunk: async outputs =>
        {
            if (killed is not null || outputs.Count < 2 || outputs.Values.Any(o => o.Ids.Count < 100)) return;
            killed = await decodeA.GaugeAsync("llm_decode_sequences_running") > 0 ? decodeA : decodeB;
            killed.Kill();
        });
        Assert.NotNull(killed);
        Assert.Equal(2, got.Count);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(expected[i].Ids, got[i].Ids);
            Assert.Equal(expected[i].Text, got[i].Text);
        }
    }

    /// <summary>Issue 21: a gateway dies mid-stream (SIGKILL); the client resumes on a second gateway that
    /// shares the session store, from the last token it received, and gets exactly the rest.</summary>
    [SharedDataFact]
    public async Task Killing_the_gateway_midway_then_resuming_on_another_loses_and_repeats_no_token()
    {
        await using var redis = await AppendOnlyRedis();
        const int tokens = 1500;
        var expected = Uninterrupted(tokens);

        await using var cm = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.CacheManager), Cluster.CacheManager.CacheManagerService.CreateAsync);
        string cmAddress = cm.GrpcAddress.ToString();
        await using var prefill = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Prefill, "--model", ModelPath, "--cache-manager", cmAddress), Cluster.Prefill.PrefillService.CreateAsync);
        await using var decode = await ServiceHost.StartAsync(TestCluster.Options(ServiceRole.Decode, "--model", ModelPath, "--cache-manager", cmAddress, "--checkpoint-every", "16", "--threads", "1"), Cluster.Decode.DecodeService.CreateAsync);
        string[] gatewayArgs = ["--model", ModelPath, "--cache-manager", cmAddress, "--prefill", prefill.GrpcAddress.ToString(),
            "--decode", decode.GrpcAddress.ToString(), "--redis", $"127.0.0.1:{redis.Port}"];
        using var gatewayA = await ServiceProcess.StartAsync("Cluster.Gateway.dll", gatewayArgs);
        using var gatewayB = await ServiceProcess.StartAsync("Cluster.Gateway.dll", gatewayArgs);
        using var toA = GrpcChannels.Create(gatewayA.GrpcAddress);
        using var toB = GrpcChannels.Create(gatewayB.GrpcAddress);

        var first = new Streamed();
        bool killed = false;
        var cut = await Record.ExceptionAsync(() => TestCluster.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(toA).Generate(Request(tokens)), default, s =>
        {
            first = s;
            if (s.Ids.Count >= 100 && !killed) { killed = true; gatewayA.Kill(); } // mid-stream
            return Task.CompletedTask;
        }));
        Assert.IsType<RpcException>(cut); // the stream was cut, not finished
        Assert.InRange(first.Ids.Count, 100, tokens - 1);

        var rest = await TestCluster.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(toB).Resume(
            new ResumeRequest { SessionId = first.SessionId, AfterIndex = first.Ids.Count - 1 }), default, null, firstOffset: first.Ids.Count);
        Assert.Equal(FinishReason.Length, rest.Finish);
        Assert.Equal(expected.Ids, first.Ids.Concat(rest.Ids).ToList()); // none lost, none repeated, none altered
    }

    [SharedDataTheory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(90)]
    [InlineData(-1)] // after the stream has finished
    public async Task A_client_that_disconnects_and_resumes_gets_the_missed_then_the_live_tokens(int receivedBeforeLeaving)
    {
        const int tokens = 400;
        var expected = Uninterrupted(tokens);
        await using var cluster = await TestCluster.StartAsync(ModelPath, checkpointEvery: 16);
        using var cts = new CancellationTokenSource();
        var first = new Streamed();
        if (receivedBeforeLeaving < 0)
        {
            first = await cluster.GenerateAsync(Request(tokens));
            receivedBeforeLeaving = 250;
            first.Ids.RemoveRange(receivedBeforeLeaving, first.Ids.Count - receivedBeforeLeaving);
        }
        else
        {
            try
            {
                await cluster.GenerateAsync(Request(tokens), new CallOptions(cancellationToken: cts.Token), s =>
                {
                    first = s;
                    if (s.Ids.Count >= receivedBeforeLeaving) cts.Cancel(); // the client goes away
                    return Task.CompletedTask;
                });
            }
            catch (Exception e) when (e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
            {
            }
            receivedBeforeLeaving = first.Ids.Count;
        }
        var rest = await cluster.ResumeAsync(first.SessionId, receivedBeforeLeaving - 1);
        Assert.Equal(expected.Ids, first.Ids.Concat(rest.Ids).ToList());
        Assert.Equal(FinishReason.Length, rest.Finish);
    }

    [SharedDataFact]
    public async Task A_resume_continues_on_the_decode_worker_that_kept_the_stopped_streams_cache()
    {
        // KV-aware routing of a resume: the client went away, its decode worker kept the cache (cut back
        // to what the client saw: the worker may have run a token or two more), and the resume runs
        // there from it, with no fetch from the cache manager.
        const int tokens = 300;
        var p = Params(tokens);
        using var model = ModelLoader.Load(ModelPath);
        var tok = ModelLoader.LoadTokenizer(ModelPath, model.Config);
        var expected = GenerationOutput.Collect(new TextGenerator(model, tok).Generate(tok.Encode(Prompt, true), p)).Single();
        await using var cluster = await TestCluster.StartAsync(ModelPath, checkpointEvery: 16, decodeWorkers: 2);
        var request = new GenerateRequest { Text = Prompt, Sampling = SamplingWire.FromEngine(p), KvPolicy = PolicyMapping.ToWire("dense") };
        for (int round = 0; round < 3; round++)
        {
            using var cts = new CancellationTokenSource();
            var first = new Streamed();
            try
            {
                await cluster.GenerateAsync(request, new CallOptions(cancellationToken: cts.Token), s =>
                {
                    first = s;
                    if (s.Ids.Count >= 40 + 30 * round) cts.Cancel(); // the client goes away
                    return Task.CompletedTask;
                });
            }
            catch (Exception e) when (e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled })
            {
            }
            long hits = cluster.Decodes.Sum(d => ((Cluster.Decode.DecodeService)d.Service).ResidentHits);
            // The worker lets go of the stream (and keeps its cache) once it sees the cancellation.
            for (int i = 0; i < 500 && !cluster.Decodes.Any(d => ((Cluster.Decode.DecodeService)d.Service).Resident.Holds(first.SessionId)); i++) await Task.Delay(10);
            var rest = await cluster.ResumeAsync(first.SessionId, first.Ids.Count - 1);
            Assert.Equal(expected.Ids, first.Ids.Concat(rest.Ids).ToList());
            Assert.Equal(hits + 1, cluster.Decodes.Sum(d => ((Cluster.Decode.DecodeService)d.Service).ResidentHits));
        }
    }

    [SharedDataFact]
    public async Task Redis_restarted_mid_run_loses_no_session_and_nothing_hangs()
    {
        await using var redis = await AppendOnlyRedis();
        await using var cluster = await TestCluster.StartAsync(ModelPath, redis: $"127.0.0.1:{redis.Port}");
        var done = await cluster.GenerateAsync(Request(40));
        Assert.Equal(40, done.Ids.Count);

        // A long stream in flight while Redis goes down and comes back: it completes or fails with a clear status.
        var inFlight = cluster.GenerateAsync(Request(3000), new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)));
        await Task.Delay(300);
        redis.Kill();
        await redis.StartAsync(); // same port and folder: appendonly reloads the data
        var outcome = await Record.ExceptionAsync(() => inFlight.WaitAsync(TimeSpan.FromSeconds(90)));
        if (outcome is not null)
        {
            var e = Assert.IsType<RpcException>(outcome);
            Assert.Contains(e.StatusCode, new[] { StatusCode.Unavailable, StatusCode.DeadlineExceeded });
        }

        // The finished session survived the restart, and the gateway reconnected by itself.
        var replay = await cluster.ResumeAsync(done.SessionId, -1);
        Assert.Equal(done.Ids, replay.Ids);
        Assert.Equal(12, (await cluster.GenerateAsync(Request(12))).Ids.Count);
    }

    /// <summary>Found by `llmctl bench chaos`: a stream that stopped before its first token reached the log
    /// (here the client leaves as soon as it has the session id, during prefill) is resumed from the
    /// start: the gateway prefills again (the seed is fixed) instead of sending decode an empty output.</summary>
    [SharedDataFact]
    public async Task A_stream_stopped_before_its_first_token_resumes_from_a_new_prefill()
    {
        const int tokens = 40;
        var expected = Uninterrupted(tokens);
        await using var cluster = await TestCluster.StartAsync(ModelPath, checkpointEvery: 16);
        var client = new LlmCluster.V1.Gateway.GatewayClient(cluster.Client);
        string? session = null;
        int before = 0;
        using (var cts = new CancellationTokenSource())
        {
            using var call = client.Generate(Request(tokens), cancellationToken: cts.Token);
            try
            {
                await foreach (var r in call.ResponseStream.ReadAllAsync(cts.Token))
                {
                    if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Started) { session = r.Started.SessionId; cts.Cancel(); }
                    if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk) before += r.Chunk.TokenIds.Count;
                }
            }
            catch (Exception e) when (e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled }) { }
        }
        Assert.NotNull(session);
        Assert.Equal(0, before);
        // Wait until the gateway has wound the call down and logged nothing.
        for (int i = 0; i < 100 && cluster.DecodeService.Running > 0; i++) await Task.Delay(50);
        await Task.Delay(300);
        var rest = await cluster.ResumeAsync(session!, -1);
        Assert.Equal(expected.Ids, rest.Ids);
        Assert.Equal(FinishReason.Length, rest.Finish);
    }

    /// <summary>Found by `llmctl bench chaos`: Redis SIGKILLed early in a stream and back half a second
    /// later; the client resumes after the last token it received (a new Generate if it never learned the
    /// session) until the stream completes, and gets the uninterrupted run's tokens.</summary>
    [SharedDataFact]
    public async Task Redis_killed_early_in_a_stream_the_client_resumes_to_the_exact_tokens()
    {
        await using var redis = await AppendOnlyRedis();
        const int tokens = 300;
        var expected = Uninterrupted(tokens);
        await using var cluster = await TestCluster.StartAsync(ModelPath, redis: $"127.0.0.1:{redis.Port}", checkpointEvery: 16);
        var client = new LlmCluster.V1.Gateway.GatewayClient(cluster.Client);
        var got = new List<int>();
        string? session = null;
        bool complete = false;
        var kill = Task.Run(async () =>
        {
            await Task.Delay(250);
            redis.Kill();
            await Task.Delay(500);
            await redis.StartAsync();
        });
        var log = new List<string>();
        for (var deadline = DateTime.UtcNow.AddSeconds(90); !complete; )
        {
            Assert.True(DateTime.UtcNow < deadline, "no complete stream within 90 s: " + string.Join(" | ", log));
            try
            {
                using var call = session is null
                    ? client.Generate(Request(tokens), deadline: DateTime.UtcNow.AddSeconds(20))
                    : client.Resume(new ResumeRequest { SessionId = session, AfterIndex = got.Count - 1 }, deadline: DateTime.UtcNow.AddSeconds(20));
                await foreach (var r in call.ResponseStream.ReadAllAsync())
                {
                    if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Started) session ??= r.Started.SessionId;
                    if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk)
                    {
                        Assert.Equal(got.Count, r.Chunk.TokenOffset);
                        got.AddRange(r.Chunk.TokenIds);
                    }
                    if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Complete) complete = true;
                }
                if (!complete) log.Add($"ended without completion after {got.Count}");
            }
            catch (RpcException e)
            {
                log.Add($"{e.StatusCode} after {got.Count}: {e.Status.Detail}");
                await Task.Delay(300);
            }
        }
        await kill;
        Assert.Equal(expected.Ids, got);
    }

    /// <summary>A redis-server with appendonly persistence, or the test reports the missing tool.</summary>
    private static async Task<RedisServerProcess> AppendOnlyRedis() =>
        await RedisServerProcess.StartOrSkipAsync(appendOnly: true) ?? throw References.Missing("redis-server is missing: install apt redis-server");

}
