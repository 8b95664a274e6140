using System.Diagnostics.Metrics;
using Cluster.Tests;
using Xunit;

namespace Cluster.Telemetry.Tests;

/// <summary>A real Prometheus scrapes /metrics over HTTP/1.1 and its PromQL sees what was recorded.</summary>
public sealed class RealPrometheusScrapeTests
{
    [SkippableFact]
    public async Task Prometheus_scrapes_counters_and_histogram_quantiles()
    {
        if (!ExternalCommands.Ensure("prometheus", "prometheus")) return;
        var meterName = "LlmCluster.Test." + Guid.NewGuid().ToString("N");
        using var meter = new Meter(meterName);
        // The exporter sees only what is recorded after its provider subscribed to the meter.
        await using var app = await TelemetryApp.StartAsync(meterName);
        var counter = meter.CreateCounter<long>("llm_request_success", description: "Finished requests");
        var latency = meter.CreateLatencyHistogram("llm_e2e_request_latency_seconds", "End-to-end latency");
        counter.Add(42, new KeyValuePair<string, object?>("finished_reason", "stop"));
        // 90 fast (8 ms) and 10 slow (0.45 s) requests: p50 falls in the (7.5 ms, 10 ms] bucket and
        // p99 in (0.4 s, 0.5 s], so Prometheus's interpolated quantiles must land inside those buckets.
        for (int i = 0; i < 90; i++) latency.Record(0.008);
        for (int i = 0; i < 10; i++) latency.Record(0.45);

        await using var prometheus = await PrometheusServer.StartAsync([$"127.0.0.1:{app.HttpPort}"]);
        var total = await prometheus.WaitForAsync("llm_request_success_total", TimeSpan.FromSeconds(60));
        Assert.Equal(42, total.Single().Value);
        Assert.Equal("stop", total.Single().Labels["finished_reason"]);
        var p50 = (await prometheus.WaitForAsync("histogram_quantile(0.5, llm_e2e_request_latency_seconds_bucket)", TimeSpan.FromSeconds(30))).Single().Value;
        var p99 = (await prometheus.QueryAsync("histogram_quantile(0.99, llm_e2e_request_latency_seconds_bucket)")).Single().Value;
        Assert.InRange(p50, 0.0075, 0.01);
        Assert.InRange(p99, 0.4, 0.5);
    }
}
