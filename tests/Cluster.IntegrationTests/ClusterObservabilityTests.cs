using Cluster.Serving.Routing;
using Grpc.Net.Client;
using System.Text.Json;
using System.Text.RegularExpressions;
using Grpc.Core;
using Cluster.Serving.Mapping;
using Cluster.Telemetry;
using Cluster.Tests;
using LlmCluster.V1;
using LlmCtl.Load;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.IntegrationTests;

/// <summary>
/// Issue 9's acceptance on one local cluster: promtool accepts every service's /metrics, a real
/// Prometheus scraping the four services agrees with the load generator's client-side TTFT and ITL
/// quantiles within the histogram's resolution, and every expression of the Grafana dashboard
/// returns data. Alone in its collection (with the other observability tests): a service's metrics
/// registry listens to meters by name, so another test's cluster in this process would add its
/// requests to these counts.
/// </summary>
[Collection(nameof(ClusterObservabilityTests))]
public sealed class ClusterObservabilityTests(ITestOutputHelper output)
{
    private static readonly string Dashboard = Path.Combine(RepoRoot(), "deploy", "grafana", "dashboards", "llm-cluster.json");

    [SharedDataFact]
    public async Task Prometheus_agrees_with_the_load_generator_and_every_dashboard_panel_has_data()
    {
        if (!ExternalCommands.Ensure("promtool", "prometheus") || !ExternalCommands.Ensure("prometheus", "prometheus")) return;
        await using var cluster = await TestCluster.StartAsync(SharedData.Path_("models", "stories260K", "stories260K.bin"));
        var services = new Dictionary<string, Serving.Hosting.RunningService>
        {
            ["gateway"] = cluster.Gateway, ["prefill"] = cluster.Prefill, ["decode"] = cluster.Decode, ["cachemanager"] = cluster.CacheManager,
        };
        await using var prometheus = await PrometheusServer.StartAsync(services.ToDictionary(s => s.Key, s => (IEnumerable<string>)[s.Value.HttpEndPoint.ToString()]));

        await cluster.WaitUntilWorkersUpAsync();
        // The client's first server-streaming calls pay for their connections and JIT (tens of ms on a loaded
        // machine, 600 ms once in CI for each of the load's first four concurrent Generates) before the
        // gateway's clock starts: warm that path, as many calls at once as the load runs, on calls the
        // gateway's latency histograms do not record (Resume of an unknown session: NOT_FOUND; Generate of
        // an empty prompt: INVALID_ARGUMENT), so both sides time the same work.
        var warm = await Assert.ThrowsAsync<RpcException>(() => cluster.ResumeAsync("no-such-session", -1));
        Assert.Equal(StatusCode.NotFound, warm.StatusCode);
        foreach (var refused in await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Assert.ThrowsAsync<RpcException>(() => cluster.GenerateAsync(new GenerateRequest())))))
            Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        // Prometheus's first scrape comes seconds after it is ready; rate() over a run it did not see
        // start would be 0 and every rate-based panel NaN.
        await prometheus.WaitForAsync("count(up == 1)", TimeSpan.FromSeconds(30), v => v == services.Count);
        // Only the load generator's requests so far: the gateway's cumulative histograms hold exactly its samples.
        var report = await LoadGenerator.RunAsync(cluster.Client, new LoadOptions(Concurrency: 4, Requests: 24, PromptTokens: 16, MaxTokens: 24));
        Assert.True(report.Failed == 0, "failed: " + string.Join(", ", report.Samples.Where(s => s.Error is not null).Select(s => s.Error)));
        output.WriteLine("client TTFTs in order (ms): " + string.Join(" ", report.Samples.Select(x => (x.TtftSeconds * 1e3).ToString("F1"))));
        output.WriteLine($"client: TTFT p50 {report.Ttft.P50 * 1e3:F2} ms p99 {report.Ttft.P99 * 1e3:F2} ms; ITL p50 {report.Itl.P50 * 1e3:F2} ms p99 {report.Itl.P99 * 1e3:F2} ms ({report.Itl.Count} gaps)");

        // Wait for a scrape that has seen every sample (counts equal, not just present).
        await prometheus.WaitForAsync("sum(llm_time_to_first_token_seconds_count)", TimeSpan.FromSeconds(30), v => v == report.Ttft.Count);
        await prometheus.WaitForAsync("sum(llm_inter_token_latency_seconds_count)", TimeSpan.FromSeconds(30), v => v == report.Itl.Count);
        foreach (var (metric, client) in new[] { ("llm_time_to_first_token_seconds", report.Ttft), ("llm_inter_token_latency_seconds", report.Itl) })
            foreach (var (q, measured) in new[] { (0.5, client.P50), (0.99, client.P99) })
            {
                var server = (await prometheus.QueryAsync($"histogram_quantile({q}, sum by (le) ({metric}_bucket))")).Single().Value;
                int serverBucket = BucketOf(server), clientBucket = BucketOf(measured);
                output.WriteLine($"{metric} q{q}: PromQL {server * 1e3:F3} ms (bucket {serverBucket}), client {measured * 1e3:F3} ms (bucket {clientBucket})");
                // histogram_quantile finds the bucket holding the sample of rank q*n and interpolates
                // linearly inside it, so its value says only which bucket the server-side quantile
                // is in. The client's sample of the same rank is the same request's (TTFT) or gap's
                // (ITL) time seen a little later: the call's start precedes the gateway's arrival
                // clock, and each chunk reaches the client after the gateway records it, with jitter
                // that lengthens one gap and shortens the next. That shift is sub-millisecond to a few
                // ms on loopback (more on a loaded 2-core machine), while buckets below 10 ms are
                // 1.5-2.5 ms wide: there the shift can cross more than one boundary. So the client's
                // value must be in the same or an adjacent bucket (wide buckets, where the client's
                // earlier TTFT start weighs) or within the bucket widened by the delivery jitter
                // allowed (narrow buckets); a real disagreement fails both.
                // At q0.99 the sample of that rank is one of the ~5 longest of ~550 gaps: one scheduling
                // stall on a loaded 2-core machine, seen by one side's clock and not the other's (the gateway
                // times a gap when its write completes, the client when the chunk is read), moves it by
                // ~10 ms; CI saw 21 ms against 9.9 ms once in some ten runs. So there two buckets apart pass.
                const double jitter = 0.005;
                double lo = serverBucket == 0 ? 0 : Buckets.LatencySeconds[serverBucket - 1];
                double hi = serverBucket < Buckets.LatencySeconds.Length ? Buckets.LatencySeconds[serverBucket] : double.PositiveInfinity;
                bool adjacent = Math.Abs(serverBucket - clientBucket) <= (q == 0.99 ? 2 : 1);
                bool withinJitter = measured >= lo - jitter && measured <= hi + jitter;
                // TTFT at q0.99 is the single slowest of the ~24 requests. A stall on the client's side
                // (its call waiting for a thread before it reaches the gateway: 122 ms against the
                // server's 14 ms in one CI run at load 26) lengthens only the client's time, while no
                // request's server-side TTFT can exceed what its client saw. So there the server's value
                // may be any amount below the client's, never above it (q0.5 still holds the two together).
                bool clientStalled = q == 0.99 && metric == "llm_time_to_first_token_seconds" && server <= measured + jitter;
                Assert.True(adjacent || withinJitter || clientStalled,
                    $"{metric} q{q}: PromQL {server} s is in bucket ({lo}, {hi}] (index {serverBucket}); the client's {measured} s is in bucket {clientBucket}, neither adjacent nor within {jitter} s of it");
            }

        await ProduceRareSeries(cluster);
        // A second, smaller run: rate() needs a counter to move between two scrapes, and the first
        // run may have spanned only a few; panels are judged on both.
        var again = await LoadGenerator.RunAsync(cluster.Client, new LoadOptions(Concurrency: 2, Requests: 8, PromptTokens: 16, MaxTokens: 24, Seed: 2));
        await prometheus.WaitForAsync("sum(llm_time_to_first_token_seconds_count)", TimeSpan.FromSeconds(30), v => v == report.Ttft.Count + 1 + again.Ttft.Count);

        foreach (var (name, service) in services)
        {
            using var http = new HttpClient();
            var text = await http.GetStringAsync($"http://{service.HttpEndPoint}/metrics");
            var (code, stdout, stderr) = ExternalCommands.RunWithInput("promtool", ["check", "metrics"], text, TimeSpan.FromSeconds(30));
            Assert.True(code == 0, $"promtool check metrics on {name}: {stdout}{stderr}");
        }

        // Every panel's query with Grafana's variables made concrete; 5m covers the whole run. A
        // series that appeared in the last scrape has one sample, too few for rate(): poll a while.
        foreach (var (labels, value) in await prometheus.QueryAsync("sum_over_time(up[5m]) / count_over_time(up[5m])"))
            output.WriteLine($"scrapes of {labels["job"]} that succeeded: {value:P0}");
        var dead = new List<string>();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        foreach (var expr in DashboardExpressions())
        {
            var promql = expr.Replace("$__rate_interval", "5m").Replace("$__interval", "5s").Replace("$__range", "5m");
            Assert.DoesNotContain("$", promql); // a template variable this test does not know
            var result = await prometheus.QueryAsync(promql);
            while (!result.Any(r => double.IsFinite(r.Value)) && DateTime.UtcNow < deadline)
            {
                // A series born during a burst shorter than the scrape interval has its final value
                // in its first sample (rate 0, and 0/0 for ratios): one more request moves it.
                await cluster.GenerateAsync(new GenerateRequest { Text = "Once", Sampling = new SamplingParams { MaxTokens = 4 } });
                await Task.Delay(1000);
                result = await prometheus.QueryAsync(promql);
            }
            output.WriteLine($"{result.Count(r => double.IsFinite(r.Value))} series: {promql}");
            if (!result.Any(r => double.IsFinite(r.Value))) dead.Add(promql);
        }
        Assert.True(dead.Count == 0, "dashboard expressions without data:\n" + string.Join("\n", dead));
    }

    /// <summary>
    /// Series that only appear under some conditions, made to appear: an error (empty prompt,
    /// INVALID_ARGUMENT), a resume, a cache miss (a GetBlocks for a session the cache manager no
    /// longer holds) and evictions (a window policy shorter than prompt plus output).
    /// </summary>
    private static async Task ProduceRareSeries(TestCluster cluster)
    {
        var bad = await Assert.ThrowsAsync<RpcException>(() => cluster.GenerateAsync(new GenerateRequest { Text = "" }));
        Assert.Equal(StatusCode.InvalidArgument, bad.StatusCode);

        var windowed = await cluster.GenerateAsync(new GenerateRequest
        {
            Text = "Once upon a time there was a little girl who liked to play",
            KvPolicy = PolicyMapping.ToWire("window(8)"),
            Sampling = new SamplingParams { MaxTokens = 24, IgnoreEos = true },
        });
        using (var resume = new LlmCluster.V1.Gateway.GatewayClient(cluster.Client).Resume(new ResumeRequest { SessionId = windowed.SessionId, AfterIndex = -1 }))
            await foreach (var _ in resume.ResponseStream.ReadAllAsync()) { }

        using var cacheManager = GrpcChannels.Create(cluster.CacheManager.GrpcAddress);
        using var miss = new LlmCluster.V1.CacheManager.CacheManagerClient(cacheManager).GetBlocks(new GetBlocksRequest { SessionId = "no-such-session" });
        var missed = await Assert.ThrowsAsync<RpcException>(async () => { await foreach (var _ in miss.ResponseStream.ReadAllAsync()) { } });
        Assert.Equal(StatusCode.NotFound, missed.StatusCode);
    }

    /// <summary>Index of the histogram bucket (upper bound inclusive, as Prometheus's `le`) holding <paramref name="seconds"/>.</summary>
    private static int BucketOf(double seconds)
    {
        int i = Array.FindIndex(Buckets.LatencySeconds, b => seconds <= b);
        return i < 0 ? Buckets.LatencySeconds.Length : i;
    }

    private static IEnumerable<string> DashboardExpressions()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Dashboard));
        var found = new List<string>();
        void Walk(JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                    if (p.Name == "expr" && p.Value.ValueKind == JsonValueKind.String) found.Add(p.Value.GetString()!);
                    else Walk(p.Value);
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var x in e.EnumerateArray()) Walk(x);
        }
        Walk(doc.RootElement);
        Assert.NotEmpty(found);
        return found;
    }

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Cluster.sln"))) return d.FullName;
        throw new InvalidOperationException("Cluster.sln not found above " + AppContext.BaseDirectory);
    }
}

[CollectionDefinition(nameof(ClusterObservabilityTests), DisableParallelization = true)]
public sealed class ClusterObservabilityCollection;
