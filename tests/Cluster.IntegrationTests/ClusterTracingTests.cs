using System.Diagnostics;
using Cluster.Tests;
using LlmCluster.V1;
using OpenTelemetry;
using OpenTelemetry.Trace;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>Issue 9: one trace per request across gateway -> prefill -> cachemanager -> decode.</summary>
[Collection(nameof(ClusterObservabilityTests))] // not beside other clusters starting: the gateway's 1 s health probes time out
public sealed class ClusterTracingTests
{
    [SharedDataFact]
    public async Task A_requests_spans_from_all_four_services_share_one_trace_id()
    {
        var spans = new SpanCollector();
        var model = SharedData.Path_("models", "stories260K", "stories260K.bin");
        await using var cluster = await TestCluster.StartAsync(model, tracing: b => b.AddProcessor(new SimpleActivityExportProcessor(spans)));

        await cluster.WaitUntilWorkersUpAsync();
        var done = await cluster.GenerateAsync(new GenerateRequest { Text = "Once upon a time", Sampling = new SamplingParams { MaxTokens = 12 } });
        Assert.Equal(12, done.Ids.Count);

        // The gateway's server span ends just after the last response is written; wait for it.
        Activity? root = null;
        for (int i = 0; i < 100 && root is null; i++, await Task.Delay(50))
            root = spans.Spans.FirstOrDefault(s => s.DisplayName == "/llmcluster.v1.Gateway/Generate");
        Assert.NotNull(root);
        Assert.Equal("LlmCluster.gateway", root!.Source.Name);

        var trace = spans.Spans.Where(s => s.TraceId == root.TraceId).Distinct().ToList();
        // The gateway's request span (ASP.NET Core's, the client sent no traceparent) starts the trace.
        Assert.Single(trace, s => s.ParentSpanId == default);
        var ours = trace.Where(s => s.Source.Name.StartsWith("LlmCluster.", StringComparison.Ordinal)).ToList();
        var services = ours.Select(s => s.Source.Name).ToHashSet();
        Assert.True(services.Count == 4, "spans: " + string.Join("\n", spans.Spans.Select(s => $"{s.Source.Name} {s.DisplayName} {s.TraceId} {s.SpanId} parent {s.ParentSpanId} recorded {s.Recorded}")));
        Assert.Equal(["LlmCluster.cachemanager", "LlmCluster.decode", "LlmCluster.gateway", "LlmCluster.prefill"], services.Order());
        Assert.Contains(ours, s => s.DisplayName == "/llmcluster.v1.Prefill/Prefill");
        Assert.Contains(ours, s => s.DisplayName == "/llmcluster.v1.Decode/Decode");
        Assert.All(ours, s => Assert.Equal(ActivityKind.Server, s.Kind));
        // The context went hop by hop through the instrumentations (gRPC client span, then the peer's
        // ASP.NET Core request span): every span but the root has its parent in the same trace.
        var ids = trace.Select(s => s.SpanId).ToHashSet();
        Assert.All(trace.Where(s => s.ParentSpanId != default), s => Assert.Contains(s.ParentSpanId, ids));
        Assert.Contains(trace, s => s.Kind == ActivityKind.Client); // Grpc.Net.Client / HttpClient spans
    }

    [SharedDataFact]
    public async Task The_session_stores_redis_commands_are_spans_of_the_request()
    {
        await using var redis = await Cluster.Sessions.Tests.RedisServerProcess.StartOrSkipAsync();
        var spans = new SpanCollector();
        var model = SharedData.Path_("models", "stories260K", "stories260K.bin");
        await using var cluster = await TestCluster.StartAsync(model, redis: redis.Configuration, tracing: b => b.AddProcessor(new SimpleActivityExportProcessor(spans)));
        await cluster.WaitUntilWorkersUpAsync();
        await cluster.GenerateAsync(new GenerateRequest { Text = "Once upon a time", Sampling = new SamplingParams { MaxTokens = 6 } });

        Activity? root = null;
        for (int i = 0; i < 100 && root is null; i++, await Task.Delay(50))
            root = spans.Spans.FirstOrDefault(s => s.DisplayName == "/llmcluster.v1.Gateway/Generate");
        Assert.NotNull(root);
        // The instrumentation drains its profiling sessions on an interval: wait for the commands.
        List<Activity> commands = [];
        for (int i = 0; i < 100 && commands.Count == 0; i++, await Task.Delay(100))
            commands = spans.Spans.Where(s => s.Source.Name.Contains("StackExchangeRedis") && s.TraceId == root!.TraceId).ToList();
        Assert.NotEmpty(commands);
        Assert.All(commands, c => Assert.Equal(ActivityKind.Client, c.Kind));
    }
}
