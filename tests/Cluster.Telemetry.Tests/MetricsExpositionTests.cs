using System.Diagnostics.Metrics;
using System.Net;
using Cluster.Tests;
using Xunit;

namespace Cluster.Telemetry.Tests;

/// <summary>What our wiring of the OpenTelemetry Prometheus exporter must give the dashboard and
/// Prometheus: counters with _total, our histogram boundaries as cumulative buckets, no scope labels or
/// target_info, fresh values on every scrape, and /metrics on the HTTP/1.1 port only.</summary>
public sealed class MetricsExpositionTests
{
    private static string NewMeterName() => "LlmCluster.Test." + Guid.NewGuid().ToString("N");

    [SkippableFact]
    public async Task Counters_get_total_and_labels_without_scope_or_target_info()
    {
        var name = NewMeterName();
        using var meter = new Meter(name);
        await using var app = await TelemetryApp.StartAsync(name);
        var counter = meter.CreateCounter<long>("llm_prompt_tokens", "{token}", "Prompt tokens processed");
        counter.Add(5, new KeyValuePair<string, object?>("model", "a\"b"));
        counter.Add(2, new KeyValuePair<string, object?>("model", "a\"b"));
        var text = await app.ScrapeAsync();
        Assert.Contains("# TYPE llm_prompt_tokens_total counter\n", text);
        Assert.Contains("llm_prompt_tokens_total{model=\"a\\\"b\"} 7", text);
        Assert.DoesNotContain("otel_scope_name", text);
        Assert.DoesNotContain("target_info", text);
    }

    [SkippableFact]
    public async Task Histogram_buckets_are_ours_cumulative_and_fresh_on_every_scrape()
    {
        var name = NewMeterName();
        using var meter = new Meter(name);
        await using var app = await TelemetryApp.StartAsync(name);
        var h = meter.CreateLatencyHistogram("llm_time_to_first_token_seconds", "TTFT");
        double[] samples = [0.0005, 0.003, 0.003, 0.2, 100];
        foreach (var s in samples) h.Record(s);
        var lines = (await app.ScrapeAsync()).Split('\n');
        long Bucket(string le) => long.Parse(lines.Single(l => l.StartsWith($"llm_time_to_first_token_seconds_bucket{{le=\"{le}\"}}")).Split(' ')[1]);
        // Each bucket counts the samples <= its bound (Prometheus's convention), at our boundaries (Buckets.LatencySeconds).
        Assert.Equal(1, Bucket("0.001"));
        Assert.Equal(1, Bucket("0.0025"));
        Assert.Equal(3, Bucket("0.005"));
        Assert.Equal(4, Bucket("0.2"));
        Assert.Equal(4, Bucket("60"));
        Assert.Equal(5, Bucket("+Inf"));
        Assert.Equal(Buckets.LatencySeconds.Length + 1, lines.Count(l => l.StartsWith("llm_time_to_first_token_seconds_bucket{")));

        // No response cache: a value recorded just now shows in the next scrape.
        h.Record(0.004);
        var again = (await app.ScrapeAsync()).Split('\n');
        Assert.True(again.Any(l => l.StartsWith("llm_time_to_first_token_seconds_count") && l.Split(' ')[1] == "6"), string.Join("\n", again.Where(l => l.Contains("_count"))));
    }

    [SkippableFact]
    public async Task Metrics_are_served_on_the_http1_port_only()
    {
        var name = NewMeterName();
        await using var app = await TelemetryApp.StartAsync(name);
        using var h2 = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        var response = await h2.GetAsync($"http://127.0.0.1:{app.GrpcPort}/metrics");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [SkippableFact]
    public async Task Promtool_accepts_the_exposition()
    {
        if (!ExternalCommands.Ensure("promtool", "prometheus")) return;
        var name = NewMeterName();
        using var process = new ProcessMetrics("test");
        using var meter = new Meter(name);
        await using var app = await TelemetryApp.StartAsync(name);
        meter.CreateCounter<long>("llm_generation_tokens", "{token}", "Generated tokens").Add(10, new KeyValuePair<string, object?>("finish_reason", "stop"));
        meter.CreateLatencyHistogram("llm_inter_token_latency_seconds", "Gap between two streamed tokens").Record(0.02);
        meter.CreateObservableGauge("llm_kv_cache_usage_ratio", () => 0.5, description: "KV cache used / capacity");
        var text = await app.ScrapeAsync();
        var (code, stdout, stderr) = ExternalCommands.RunWithInput("promtool", ["check", "metrics"], text, TimeSpan.FromSeconds(60));
        Assert.True(code == 0, $"promtool: {stdout}{stderr}\n---\n{text}");
        Assert.Contains(text.Split('\n'), l => l.StartsWith("llm_build_info{") && l.Contains("service=\"test\""));
        Assert.Contains(text.Split('\n'), l => l.StartsWith("llm_kv_cache_usage_ratio ") || l.StartsWith("llm_kv_cache_usage_ratio{"));
    }
}
