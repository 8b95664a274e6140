using System.Diagnostics.Metrics;
using Cluster.Tests;
using Xunit;

namespace Cluster.Telemetry.Tests;

public sealed class PrometheusTextTests
{
    private static (MetricsRegistry Registry, Meter Meter) NewRegistry()
    {
        var meterName = "LlmCluster.Test." + Guid.NewGuid().ToString("N");
        return (new MetricsRegistry(meterName), new Meter(meterName));
    }

    [Fact]
    public void Counter_gets_total_suffix_help_type_and_escaped_labels()
    {
        var (registry, meter) = NewRegistry();
        using var _ = registry;
        var counter = meter.CreateCounter<long>("llm_prompt_tokens", description: "Prompt tokens\nprocessed \\ counted");
        counter.Add(5, new KeyValuePair<string, object?>("model", "a\"b\\c\nd"));
        counter.Add(2, new KeyValuePair<string, object?>("model", "a\"b\\c\nd"));
        var text = registry.Scrape();
        Assert.Contains("# HELP llm_prompt_tokens_total Prompt tokens\\nprocessed \\\\ counted\n", text);
        Assert.Contains("# TYPE llm_prompt_tokens_total counter\n", text);
        Assert.Contains("llm_prompt_tokens_total{model=\"a\\\"b\\\\c\\nd\"} 7\n", text);
    }

    [Fact]
    public void Histogram_buckets_are_cumulative_and_end_with_inf()
    {
        var (registry, meter) = NewRegistry();
        using var _ = registry;
        var h = meter.CreateLatencyHistogram("llm_time_to_first_token_seconds", "TTFT");
        double[] samples = [0.0005, 0.003, 0.003, 0.2, 100];
        foreach (var s in samples) h.Record(s);
        var lines = registry.Scrape().Split('\n');
        long Bucket(string le) => long.Parse(lines.Single(l => l.StartsWith($"llm_time_to_first_token_seconds_bucket{{le=\"{le}\"}}")).Split(' ')[1]);
        // Each bucket counts the samples <= its bound: Prometheus's cumulative convention.
        Assert.Equal(1, Bucket("0.001"));
        Assert.Equal(1, Bucket("0.0025"));
        Assert.Equal(3, Bucket("0.005"));
        Assert.Equal(4, Bucket("0.2"));
        Assert.Equal(4, Bucket("60"));
        Assert.Equal(5, Bucket("+Inf"));
        Assert.Contains("llm_time_to_first_token_seconds_count 5", lines);
        var sum = double.Parse(lines.Single(l => l.StartsWith("llm_time_to_first_token_seconds_sum ")).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(samples.Sum(), sum, 9);
    }

    [Fact]
    public void Gauges_updown_counters_and_process_metrics_are_gauges()
    {
        var (registry, meter) = NewRegistry();
        using var _ = registry;
        meter.CreateUpDownCounter<int>("llm_requests_running").Add(3);
        meter.CreateObservableGauge("llm_kv_cache_usage_ratio", () => 0.25);
        var text = registry.Scrape();
        Assert.Contains("# TYPE llm_requests_running gauge\nllm_requests_running 3\n", text);
        Assert.Contains("# TYPE llm_kv_cache_usage_ratio gauge\nllm_kv_cache_usage_ratio 0.25\n", text);
    }

    [Fact]
    public void Promtool_accepts_the_exposition()
    {
        if (!ExternalCommands.Ensure("promtool", "prometheus")) return;
        using var process = new ProcessMetrics("test");
        var meterName = "LlmCluster.Test." + Guid.NewGuid().ToString("N");
        using var registry = new MetricsRegistry(meterName, ProcessMetrics.MeterName);
        using var meter = new Meter(meterName);
        meter.CreateCounter<long>("llm_generation_tokens", description: "Generated tokens").Add(10, new KeyValuePair<string, object?>("finish_reason", "stop"));
        meter.CreateLatencyHistogram("llm_inter_token_latency_seconds", "Gap between two streamed tokens").Record(0.02);
        meter.CreateObservableGauge("llm_kv_cache_usage_ratio", () => 0.5, description: "KV cache used / capacity");
        var text = registry.Scrape();
        var (code, stdout, stderr) = ExternalCommands.RunWithInput("promtool", ["check", "metrics"], text, TimeSpan.FromSeconds(60));
        Assert.True(code == 0, $"promtool: {stdout}{stderr}\n---\n{text}");
        Assert.Contains(text.Split('\n'), l => l.StartsWith("llm_build_info{") && l.Contains("service=\"test\"") && l.EndsWith(" 1"));
    }
}
