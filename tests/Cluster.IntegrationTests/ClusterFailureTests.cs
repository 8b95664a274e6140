using System.Diagnostics;
using Grpc.Core;
using Cluster.Tests;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Cancellation, Abort, deadlines, bad input and dead services: each ends in a clear status, never a hang.</summary>
public sealed class ClusterFailureTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    private static GenerateRequest Endless(string text = "Once upon a time") => new()
    {
        Text = text,
        Sampling = new SamplingParams { Temperature = 0, MaxTokens = 1_000_000, IgnoreEos = true, Seed = 1 },
        KvPolicy = new KvPolicy { SinkWindow = new SinkWindowPolicy { Sink = 4, Window = 60 } }, // endless at constant memory
    };

    private static async Task WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > timeout) throw new TimeoutException($"condition not met within {timeout}");
            await Task.Delay(10);
        }
    }

    [SharedDataFact]
    public async Task Client_cancellation_frees_the_sequence_on_the_decode_worker()
    {
        using var cts = new CancellationTokenSource();
        using var call = new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).Generate(Endless(), new CallOptions(cancellationToken: cts.Token));
        int chunks = 0;
        await foreach (var r in call.ResponseStream.ReadAllAsync(cts.Token))
            if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk && ++chunks == 20) break;
        Assert.Equal(1, f.Cluster.DecodeService.Running);
        cts.Cancel();
        // One decode step of this model takes well under a millisecond; the batch drops the sequence
        // before its next step once the cancellation reaches the worker.
        await WaitUntil(() => f.Cluster.DecodeService.Running == 0, TimeSpan.FromSeconds(5));
    }

    [SharedDataFact]
    public async Task Abort_ends_the_stream_with_finish_reason_abort_and_frees_the_sequence()
    {
        using var call = new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).Generate(Endless());
        string session = "";
        FinishReason? finish = null;
        int chunks = 0;
        await foreach (var r in call.ResponseStream.ReadAllAsync())
        {
            if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Started) session = r.Started.SessionId;
            if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk && ++chunks == 10)
                Assert.True((await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).AbortAsync(new AbortRequest { SessionId = session })).Aborted);
            if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Complete) finish = r.Complete.FinishReason;
        }
        Assert.Equal(FinishReason.Abort, finish);
        await WaitUntil(() => f.Cluster.DecodeService.Running == 0, TimeSpan.FromSeconds(5));
        Assert.False((await new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).AbortAsync(new AbortRequest { SessionId = session })).Aborted);
    }

    [SharedDataFact]
    public async Task A_deadline_gives_deadline_exceeded()
    {
        var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.GenerateAsync(Endless(), new CallOptions(deadline: DateTime.UtcNow.AddMilliseconds(300))));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        await WaitUntil(() => f.Cluster.DecodeService.Running == 0, TimeSpan.FromSeconds(5));
    }

    public static TheoryData<string, string> BadRequests() => new()
    {
        { "empty", "prompt is empty" },
        { "too_long", "context is 512" },
        { "top_p", "top_p" },
        { "temperature", "temperature" },
        { "window0", "window" },
        { "bad_token", "outside the vocabulary" },
        { "n", "sampling.n must be in [1, 128]" },
    };

    [SharedDataTheory]
    [MemberData(nameof(BadRequests))]
    public async Task Bad_requests_get_a_status_that_names_the_problem(string kind, string expected)
    {
        var request = new GenerateRequest { Text = "Once", Sampling = new SamplingParams { MaxTokens = 4 } };
        switch (kind)
        {
            case "empty": request.Text = ""; break;
            case "too_long": request.Text = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 200)); break;
            case "top_p": request.Sampling.TopP = 1.5f; break;
            case "temperature": request.Sampling.Temperature = -1; break;
            case "window0": request.KvPolicy = new KvPolicy { Window = new WindowPolicy { Window = 0 } }; break;
            case "bad_token": request.TokenIds = new TokenIds { Ids = { 1, 99999 } }; break;
            case "n": request.Sampling.N = 0; break;
        }
        var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.GenerateAsync(request));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(expected, e.Message);
    }
}

/// <summary>Killing a worker makes new requests fail fast with UNAVAILABLE and a message, not hang.
/// Each test kills part of its own cluster. (The cache manager is a cache: without it requests still
/// stream, KvRebuildTests.A_request_streams_its_local_tokens_while_the_cache_manager_is_down.)</summary>
public sealed class DeadServiceTests
{
    [SharedDataTheory]
    [InlineData("decode")]
    [InlineData("prefill")]
    public async Task A_dead_service_fails_new_requests_fast_with_unavailable(string victim)
    {
        await using var cluster = await TestCluster.StartAsync(SharedData.Path_("models", "stories260K", "stories260K.bin"));
        var request = new GenerateRequest { Text = "Once upon a time", Sampling = new SamplingParams { Temperature = 0, MaxTokens = 16 } };
        Assert.Equal(16, (await cluster.GenerateAsync(request)).Ids.Count); // healthy first
        await (victim == "decode" ? cluster.Decode : cluster.Prefill).DisposeAsync();

        var sw = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RpcException>(() => cluster.GenerateAsync(request, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30))));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed}");
    }
}

/// <summary>A prefill worker that refuses the connection never saw the request: the gateway sends it to
/// another one instead of failing it (what a request right after a worker died, or before it listened, met).</summary>
public sealed class RefusedPrefillTests
{
    [SharedDataFact]
    public async Task A_prefill_refused_by_a_dead_worker_goes_to_another_one()
    {
        var model = SharedData.Path_("models", "stories260K", "stories260K.bin");
        await using var cluster = await TestCluster.StartAsync(model);
        // A second gateway whose first prefill worker is an address nothing listens on. Ties go round-robin
        // from the second worker, so the first request goes to the live one and the second to the dead one,
        // long before the health checks (every 2 s, two failures) take it out of rotation.
        var dead = $"http://127.0.0.1:{FreePorts.Next()}";
        await using var gateway = await Cluster.Serving.Hosting.ServiceHost.StartAsync(TestCluster.Options(Cluster.Serving.Hosting.ServiceRole.Gateway,
            "--model", model, "--cache-manager", cluster.CacheManager.GrpcAddress.ToString(),
            "--prefill", $"{dead},{cluster.Prefill.GrpcAddress}", "--decode", cluster.Decode.GrpcAddress.ToString(), "--policy", "dense"),
            Cluster.Gateway.GatewayService.CreateAsync);
        using var channel = Cluster.Serving.Routing.GrpcChannels.Create(gateway.GrpcAddress);
        var client = new LlmCluster.V1.Gateway.GatewayClient(channel);
        var request = new GenerateRequest { Text = "Once upon a time", Sampling = new SamplingParams { Temperature = 0, MaxTokens = 16 } };
        var expected = (await cluster.GenerateAsync(request)).Ids;
        for (int i = 0; i < 3; i++)
        {
            var got = await TestCluster.ReadAsync(client.Generate(request, deadline: DateTime.UtcNow.AddSeconds(60)), default, null);
            Assert.Equal(expected, got.Ids);
        }
    }
}
