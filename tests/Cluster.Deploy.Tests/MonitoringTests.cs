using System.Text.Json;
using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using Xunit;

namespace Cluster.Deploy.Tests;

/// <summary>deploy/prometheus/prometheus.yml and deploy/grafana/ against the services and docs/METRICS.md.</summary>
public class MonitoringTests
{
    private static readonly string PrometheusYml = Contract.Repo("deploy", "prometheus", "prometheus.yml");
    private static readonly string DashboardJson = Contract.Repo("deploy", "grafana", "dashboards", "llm-cluster.json");

    [SkippableFact]
    public void Prometheus_scrapes_each_service_as_its_own_job_on_its_metrics_port_by_compose_name()
    {
        var config = Yaml.LoadFile(PrometheusYml);
        var jobs = config["scrape_configs"].Seq("scrape_configs").Select(j => j.Map("job")).ToDictionary(j => j["job_name"].Text()!);
        Assert.Equal(Contract.Roles.Select(r => r.Name()).Order(), jobs.Keys.Order());
        var compose = Compose.Services(Compose.Load());
        foreach (var role in Contract.Roles)
        {
            var job = jobs[role.Name()];
            Assert.Equal(Contract.MetricsPath, job.At("metrics_path").Text() ?? "/metrics");
            var sd = job["dns_sd_configs"].Seq("dns_sd_configs").Single();
            Assert.Equal(role.DefaultHttpPort().ToString(), sd.At("port").Text());
            var name = sd.At("names").Seq("names").Single().Text()!;
            Assert.Equal(role.Name(), name);
            Assert.Equal(role.DefaultHttpPort().ToString(), Compose.Environment(compose[name].Map(name))[Contract.HttpPortVar]);
        }
    }

    [SkippableFact]
    public void Promtool_accepts_the_prometheus_config()
    {
        if (!ExternalCommands.Ensure("promtool", "prometheus")) return;
        var (code, stdout, stderr) = ExternalTools.Run(ExternalCommands.Find("promtool")!, ["check", "config", PrometheusYml], TimeSpan.FromSeconds(60));
        Assert.True(code == 0, stdout + stderr);
    }

    [SkippableFact]
    public void Grafana_provisioning_loads_the_dashboard_from_where_compose_mounts_it_with_the_datasource_it_names()
    {
        var provider = Yaml.LoadFile(Contract.Repo("deploy", "grafana", "provisioning", "dashboards", "llm-cluster.yml"))["providers"].Seq("providers").Single();
        var dashboardsIn = provider.At("options", "path").Text();
        var mounts = Compose.Services(Compose.Load())["grafana"].At("volumes").Seq("grafana volumes").Select(v => v.Text()!.Split(':')).ToList();
        Assert.Contains(mounts, m => m[0] == "./deploy/grafana/dashboards" && m[1] == dashboardsIn);
        Assert.Contains(mounts, m => m[0] == "./deploy/grafana/provisioning" && m[1] == "/etc/grafana/provisioning");

        var datasource = Yaml.LoadFile(Contract.Repo("deploy", "grafana", "provisioning", "datasources", "prometheus.yml"))["datasources"].Seq("datasources").Single();
        Assert.Equal("http://prometheus:9090", datasource.At("url").Text());
        Assert.Contains("prometheus", Compose.Services(Compose.Load()).Keys);
        var uids = Panels().SelectMany(p => new[] { p.GetProperty("datasource") }.Concat(Targets(p).Select(t => t.GetProperty("datasource"))))
            .Select(d => d.GetProperty("uid").GetString()).Distinct();
        Assert.Equal(new[] { datasource.At("uid").Text() }, uids);
    }

    [SkippableFact]
    public void Dashboard_has_the_panels_operators_need()
    {
        var exprs = Panels().SelectMany(Targets).Select(t => t.GetProperty("expr").GetString()!).ToList();
        foreach (var latency in new[] { "llm_time_to_first_token_seconds", "llm_time_per_output_token_seconds", "llm_inter_token_latency_seconds", "llm_e2e_request_latency_seconds" })
            foreach (var q in new[] { "0.5", "0.9", "0.99" })
                Assert.Contains(exprs, e => e.StartsWith($"histogram_quantile({q}, ") && e.Contains(latency + "_bucket"));
        foreach (var needed in new[] { "llm_prompt_tokens_total", "llm_generation_tokens_total", "llm_requests_running", "llm_requests_waiting",
                     "llm_kv_cache_usage_ratio", "llm_kv_compression_ratio", "llm_kv_transfer_seconds_bucket", "llm_request_errors_total" })
            Assert.Contains(exprs, e => e.Contains(needed));
        Assert.Contains(exprs, e => e.Contains("sum by (code)"));
        Assert.True(exprs.Count(e => e.Contains("instance")) >= 4, "per-worker panels (by instance) missing");
    }

    [SkippableFact]
    public void Every_dashboard_expression_names_only_documented_metrics_labels_and_jobs()
    {
        var metrics = Contract.Metrics();
        var jobs = Contract.Roles.Select(r => r.Name()).ToHashSet();
        foreach (var expr in Panels().SelectMany(Targets).Select(t => t.GetProperty("expr").GetString()!))
        {
            var used = new List<Contract.Metric>();
            foreach (var name in Regex.Matches(expr, @"\bllm_[a-z0-9_]+").Select(m => m.Value))
            {
                var suffix = Regex.Match(name, "_(bucket|sum|count)$");
                var metric = metrics.GetValueOrDefault(name)
                    ?? (suffix.Success ? metrics.GetValueOrDefault(name[..suffix.Index]) : null);
                Assert.True(metric is not null, $"'{expr}': {name} is not in docs/METRICS.md");
                // A histogram has series only under _bucket/_sum/_count; a suffix on anything else is a typo.
                Assert.True(metric.Type == "histogram" == (metric.Name != name), $"'{expr}': {name} does not match the {metric.Type} {metric.Name}");
                used.Add(metric);
            }
            Assert.NotEmpty(used);
            var labels = used.SelectMany(m => m.Labels).Concat(["le", "instance", "job"]).ToHashSet();
            foreach (var by in Regex.Matches(expr, @"by \(([^)]*)\)").SelectMany(m => m.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries)))
                Assert.True(labels.Contains(by), $"'{expr}': no metric in it has label '{by}'");
            foreach (var job in Regex.Matches(expr, @"job=""(\w+)""").Select(m => m.Groups[1].Value))
            {
                Assert.Contains(job, jobs);
                Assert.All(used, m => Assert.True(m.Jobs.Contains(job) || m.Jobs.Contains("*"), $"'{expr}': {m.Name} is not exported by {job}"));
            }
        }
    }

    [SkippableFact]
    public void Promtool_parses_every_dashboard_expression()
    {
        if (!ExternalCommands.Ensure("promtool", "prometheus")) return;
        // Recording rules are the offline way to have promtool parse PromQL; Grafana's range variable
        // becomes a literal range.
        var exprs = Panels().SelectMany(Targets).Select(t => t.GetProperty("expr").GetString()!.Replace("$__rate_interval", "1m")).ToList();
        var rules = "groups:\n  - name: dashboard\n    rules:\n" + string.Concat(exprs.Select((e, i) => $"      - record: dashboard_expr_{i}\n        expr: {JsonSerializer.Serialize(e)}\n"));
        var file = Path.Combine(Path.GetTempPath(), $"llmcluster-dashboard-{Guid.NewGuid():N}.yml");
        File.WriteAllText(file, rules);
        try
        {
            var (code, stdout, stderr) = ExternalTools.Run(ExternalCommands.Find("promtool")!, ["check", "rules", file], TimeSpan.FromSeconds(60));
            Assert.True(code == 0, stdout + stderr);
            Assert.Contains($"SUCCESS: {exprs.Count} rules found", stdout);
        }
        finally { File.Delete(file); }
    }

    private static List<JsonElement> Panels()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(DashboardJson));
        var root = doc.RootElement.Clone();
        Assert.Equal("llm-cluster", root.GetProperty("uid").GetString());
        return root.GetProperty("panels").EnumerateArray().Where(p => p.GetProperty("type").GetString() != "row").ToList();
    }

    private static IEnumerable<JsonElement> Targets(JsonElement panel) => panel.GetProperty("targets").EnumerateArray();
}
