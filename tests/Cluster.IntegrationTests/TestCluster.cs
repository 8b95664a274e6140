using Cluster.Serving.Routing;
using Grpc.Net.Client;
using Grpc.Core;
using Cluster.Serving.Hosting;
using LlmCluster.V1;

namespace Cluster.IntegrationTests;

/// <summary>
/// The four services in this process on free loopback ports, wired as `llmctl up` wires its
/// processes (each service has its own model instance, as separate processes would).
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    private TestCluster() { }

    public RunningService CacheManager { get; private set; } = null!;
    public RunningService Prefill { get; private set; } = null!;
    public RunningService Decode => Decodes[0];
    public List<RunningService> Decodes { get; } = [];
    public RunningService Gateway { get; private set; } = null!;
    public GrpcChannel Client { get; private set; } = null!;

    /// <summary>The gateway's OpenAI-compatible API ("http://127.0.0.1:port/v1/").</summary>
    public Uri OpenAiBase => new($"http://127.0.0.1:{Gateway.HttpEndPoint.Port}/v1/");

    public Cluster.Decode.DecodeService DecodeService => (Cluster.Decode.DecodeService)Decode.Service;

    public static async Task<TestCluster> StartAsync(string model, string policy = "dense", string? qfilters = null, int checkpointEvery = 8, int decodeWorkers = 1, string? redis = null, Action<OpenTelemetry.Trace.TracerProviderBuilder>? tracing = null, string[]? gatewayOptions = null, string[]? decodeOptions = null, string[]? prefillOptions = null)
    {
        var c = new TestCluster();
        string[] Q(string[] args) => qfilters is null ? args : [.. args, "--qfilters", qfilters];
        c.CacheManager = await ServiceHost.StartAsync(Options(ServiceRole.CacheManager, Q([])), Cluster.CacheManager.CacheManagerService.CreateAsync, tracing: tracing);
        var cm = c.CacheManager.GrpcAddress.ToString();
        c.Prefill = await ServiceHost.StartAsync(Options(ServiceRole.Prefill, Q(["--model", model, "--cache-manager", cm, .. prefillOptions ?? []])), Cluster.Prefill.PrefillService.CreateAsync, tracing: tracing);
        for (int i = 0; i < decodeWorkers; i++)
            c.Decodes.Add(await ServiceHost.StartAsync(Options(ServiceRole.Decode, Q(["--model", model, "--cache-manager", cm, "--checkpoint-every", checkpointEvery.ToString(), .. decodeOptions ?? []])), Cluster.Decode.DecodeService.CreateAsync, tracing: tracing));
        string[] gatewayArgs = Q(["--model", model, "--cache-manager", cm, "--prefill", c.Prefill.GrpcAddress.ToString(),
            "--decode", string.Join(',', c.Decodes.Select(d => d.GrpcAddress.ToString())), "--policy", policy]);
        if (redis is not null) gatewayArgs = [.. gatewayArgs, "--redis", redis];
        if (gatewayOptions is not null) gatewayArgs = [.. gatewayArgs, .. gatewayOptions];
        c.Gateway = await ServiceHost.StartAsync(Options(ServiceRole.Gateway, gatewayArgs), Cluster.Gateway.GatewayService.CreateAsync, tracing: tracing);
        c.Client = GrpcChannels.Create(c.Gateway.GrpcAddress);
        return c;
    }

    /// <summary>A service's options on 127.0.0.1 with ports chosen by the system.</summary>
    public static ServiceOptions Options(ServiceRole role, params string[] args) =>
        ServiceOptions.Parse(role, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", .. args], new Dictionary<string, string?>());

    /// <summary>
    /// Waits until the gateway sees every worker healthy (health checks run every 2 s; a worker is out
    /// after two failed probes in a row, which a heavily loaded machine can produce while services start).
    /// </summary>
    public async Task WaitUntilWorkersUpAsync()
    {
        for (var deadline = DateTime.UtcNow.AddSeconds(30); ; await Task.Delay(200))
        {
            var health = await new LlmCluster.V1.Gateway.GatewayClient(Client).HealthAsync(new HealthRequest());
            if (health.Components.Count > 0 && health.Components.Values.All(v => v == "up")) return;
            Xunit.Assert.True(DateTime.UtcNow < deadline, "workers not up: " + health.Components);
        }
    }

    /// <summary>Runs a request to the end and gathers what the client saw.</summary>
    public Task<Streamed> GenerateAsync(GenerateRequest request, CallOptions options = default, Func<Streamed, Task>? onChunk = null) =>
        ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(Client).Generate(request, options), options.CancellationToken, onChunk);

    /// <summary>Resumes a session after a token index and gathers the rest.</summary>
    public Task<Streamed> ResumeAsync(string sessionId, long afterIndex, Func<Streamed, Task>? onChunk = null) =>
        ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(Client).Resume(new ResumeRequest { SessionId = sessionId, AfterIndex = afterIndex }), default, onChunk, firstOffset: (int)afterIndex + 1);

    /// <summary>Reads a stream; asserts that token offsets run on without gap or repeat.</summary>
    public static async Task<Streamed> ReadAsync(AsyncServerStreamingCall<GenerateResponse> call, CancellationToken ct, Func<Streamed, Task>? onChunk, int firstOffset = 0)
    {
        using var _ = call;
        var s = new Streamed();
        await foreach (var r in call.ResponseStream.ReadAllAsync(ct))
        {
            switch (r.ResponseCase)
            {
                case GenerateResponse.ResponseOneofCase.Started: s.SessionId = r.Started.SessionId; s.TurnId = r.Started.TurnId; break;
                case GenerateResponse.ResponseOneofCase.Chunk:
                    Xunit.Assert.Equal(firstOffset + s.Ids.Count, r.Chunk.TokenOffset);
                    s.Ids.AddRange(r.Chunk.TokenIds);
                    s.Text += r.Chunk.Text;
                    if (onChunk is not null) await onChunk(s);
                    break;
                case GenerateResponse.ResponseOneofCase.Complete: s.Finish = r.Complete.FinishReason; s.Complete = r.Complete; break;
            }
        }
        return s;
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        foreach (var s in new[] { Gateway, Prefill, CacheManager }.Concat(Decodes))
            if (s is not null) await s.DisposeAsync();
    }
}

public sealed class Streamed
{
    public string SessionId { get; set; } = "";
    /// <summary>This turn's token log (Started.turn_id).</summary>
    public string TurnId { get; set; } = "";
    public List<int> Ids { get; } = [];
    public string Text { get; set; } = "";
    public FinishReason Finish { get; set; }
    public Complete? Complete { get; set; }
}
