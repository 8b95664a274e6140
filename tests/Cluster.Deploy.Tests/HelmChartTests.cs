using System.Text.Json;
using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;
using Xunit;

namespace Cluster.Deploy.Tests;

/// <summary>
/// The Helm chart without helm (not installable here): values.yaml against values.schema.json and
/// the code's defaults, and the templates' text against values.yaml and ServiceOptions.
/// </summary>
public class HelmChartTests
{
    private static string Chart(params string[] parts) => Contract.Repo(["deploy", "k8s", "helm", "llm-cluster", .. parts]);
    private static Dictionary<string, object?> Values() => Yaml.LoadFile(Chart("values.yaml"));
    private static JsonElement Schema() => JsonDocument.Parse(File.ReadAllText(Chart("values.schema.json"))).RootElement.Clone();
    private static string Template(string name) => File.ReadAllText(Chart("templates", name));
    private static IEnumerable<string> Templates() => Directory.GetFiles(Chart("templates")).Order();

    [SkippableFact]
    public void Values_validate_against_the_schema_alone_and_with_the_gpu_overlay()
    {
        Assert.Empty(JsonSchema.Validate(Schema(), Values()));
        Assert.Empty(JsonSchema.Validate(Schema(), Merge(Values(), Yaml.LoadFile(Chart("values-gpu.yaml")))));
    }

    [SkippableTheory]
    [InlineData("gateway.ports.grpc", 70000L, "maximum")]
    [InlineData("decode.maxBatch", "32", "expected integer")]
    [InlineData("policy", "sinkwindow(4,252)", "does not match")]
    [InlineData("redis.enabled", "yes", "expected boolean")]
    [InlineData("decode.autoscaling.metric", "llm_kv_usage", "is not one of")]
    public void Schema_rejects_bad_values(string path, object value, string error)
    {
        var values = Values();
        var keys = path.Split('.');
        keys[..^1].Aggregate((object?)values, (node, key) => node.At(key)).Map(path)[keys[^1]] = value;
        Assert.Contains(JsonSchema.Validate(Schema(), values), e => e.Contains(error));
    }

    [SkippableFact]
    public void Schema_rejects_a_renamed_or_unknown_key()
    {
        var values = Values();
        var decode = values["decode"].Map("decode");
        decode["maxBatchSize"] = decode["maxBatch"];
        decode.Remove("maxBatch");
        Assert.Contains(JsonSchema.Validate(Schema(), values), e => e.Contains("'maxBatchSize' is not allowed"));
        values.Remove("gateway");
        Assert.Contains(JsonSchema.Validate(Schema(), values), e => e.Contains("'gateway' is required"));
    }

    [SkippableFact]
    public void Values_ports_and_settings_are_the_services_defaults()
    {
        var values = Values();
        var defaults = new ServiceOptions(ServiceRole.Decode);
        foreach (var role in Contract.Roles)
        {
            Assert.Equal((long)role.DefaultGrpcPort(), values.At(role.Name(), "ports", "grpc"));
            Assert.Equal((long)role.DefaultHttpPort(), values.At(role.Name(), "ports", "http"));
        }
        Assert.Equal(defaults.Policy, values["policy"]);
        Assert.Equal((long)defaults.SessionTtl, values["sessionTtl"]);
        Assert.Equal((long)defaults.MaxBatch, values.At("decode", "maxBatch"));
        Assert.Equal((long)defaults.CheckpointEvery, values.At("decode", "checkpointEvery"));
        Assert.Equal((long)defaults.MemoryMb, values.At("cachemanager", "memoryMb"));
        Assert.Equal("", values.At("model", "path"));   // a generated model unless a path is given
    }

    [SkippableFact]
    public void Each_service_template_sets_only_its_own_options_and_every_address_it_needs()
    {
        var helpers = Template("_helpers.tpl");
        var workloads = Template("workloads.yaml");
        var common = Regex.Matches(workloads, @"- name: (LLM_\w+)").Select(m => m.Groups[1].Value).ToList();
        Assert.Contains(Contract.GrpcPortVar, common);
        Assert.Contains(Contract.HttpPortVar, common);
        foreach (var role in Contract.Roles)
        {
            var block = Regex.Match(helpers, $@"\{{\{{- define ""llm-cluster\.env\.{role.Name()}"" -\}}\}}(.*?)(?=\{{\{{- define|\z)", RegexOptions.Singleline);
            Assert.True(block.Success, $"_helpers.tpl: no env block for {role.Name()}");
            var names = Regex.Matches(block.Groups[1].Value, @"- name: (LLM_\w+)").Select(m => m.Groups[1].Value).Concat(common).ToList();
            Assert.Equal(names.Count, names.Distinct().Count());
            var known = Contract.EnvVars(role);
            Assert.All(names, n => Assert.True(known.Contains(n), $"helm: {n} is not an option of {role.Name()}"));
            foreach (var (variable, target) in Contract.AddressVars.Where(a => known.Contains(a.Key)))
                Assert.Matches($@"- name: {variable}\s+value: ""http://\{{\{{ \$name \}}\}}-{target.Name()}:\{{\{{ \.Values\.{target.Name()}\.ports\.grpc \}}\}}""",
                    block.Groups[1].Value.Replace("{{ include \"llm-cluster.fullname\" . }}", "{{ $name }}"));
        }
    }

    [SkippableFact]
    public void Templates_use_only_values_that_exist_and_configmap_keys_that_are_defined()
    {
        var values = Values();
        var roleValues = Contract.Roles.Select(r => values[r.Name()]).ToList();
        var keys = Regex.Matches(Template("configmap.yaml"), @"^  ([a-z-]+):", RegexOptions.Multiline).Select(m => m.Groups[1].Value).ToHashSet();
        foreach (var file in Templates())
        {
            var text = File.ReadAllText(file);
            foreach (var path in Regex.Matches(text, @"\.Values((?:\.\w+)+)").Select(m => m.Groups[1].Value.TrimStart('.').Split('.')))
                Assert.True(values.At(path) is not null || Contains(values, path), $"{Path.GetFileName(file)}: .Values.{string.Join('.', path)} is not in values.yaml");
            foreach (var path in Regex.Matches(text, @"\$v((?:\.\w+)+)").Select(m => m.Groups[1].Value.TrimStart('.').Split('.')))
                Assert.True(roleValues.Any(v => Contains(v, path)), $"{Path.GetFileName(file)}: $v.{string.Join('.', path)} is in no service's values");
            foreach (var key in Regex.Matches(text, @"""key"" ""([a-z-]+)""").Select(m => m.Groups[1].Value))
                Assert.True(keys.Contains(key), $"{Path.GetFileName(file)}: ConfigMap key '{key}' is not defined in configmap.yaml");
            // Balanced actions: every if/range/with/define has its end (a cheap stand-in for rendering).
            var opens = Regex.Matches(text, @"\{\{-?\s*(if|range|with|define)\b").Count;
            var ends = Regex.Matches(text, @"\{\{-?\s*end\s*-?\}\}").Count;
            Assert.True(opens == ends, $"{Path.GetFileName(file)}: {opens} blocks opened, {ends} ended");
        }
        foreach (var shared in new[] { "ports", "resources", "nodeSelector", "tolerations", "affinity" })
            Assert.All(roleValues, v => Assert.True(Contains(v, [shared]), $"every service's values need '{shared}'"));
    }

    [SkippableFact]
    public void Workloads_probe_healthz_on_the_http_port_and_name_the_ports_the_services_target()
    {
        var workloads = Template("workloads.yaml");
        Assert.Contains("- { name: grpc, containerPort: {{ $v.ports.grpc }} }", workloads);
        Assert.Contains("- { name: http, containerPort: {{ $v.ports.http }} }", workloads);
        Assert.Equal(2, Regex.Matches(workloads, @"httpGet: \{ path: " + Contract.HealthPath + @", port: http \}").Count);
        Assert.Contains("prometheus.io/port: {{ $v.ports.http | quote }}", workloads);
        Assert.Contains($"prometheus.io/path: {Contract.MetricsPath}", workloads);
        Assert.Contains("- { name: http, port: {{ $v.ports.http }}, targetPort: http }", workloads);
        Assert.Contains("- name: LLM_GRPC_PORT\n              value: {{ $v.ports.grpc | quote }}", workloads);
        Assert.Contains("- name: LLM_HTTP_PORT\n              value: {{ $v.ports.http | quote }}", workloads);
        Assert.Contains("path: /metrics", Template("servicemonitor.yaml"));
        Assert.Contains(".Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\"", Template("servicemonitor.yaml"));
        Assert.Contains("\"--appendonly\", \"yes\"", Template("redis.yaml"));
        var chart = Yaml.LoadFile(Chart("Chart.yaml"));
        Assert.Equal("v2", chart["apiVersion"]);
        Assert.Equal("llm-cluster", chart["name"]);
    }

    private static bool Contains(object? node, string[] path) =>
        path.Length == 0 || node is Dictionary<string, object?> m && m.TryGetValue(path[0], out var next) && Contains(next, path[1..]);

    /// <summary>Helm's merge of -f files: maps merge key by key, anything else is replaced.</summary>
    private static Dictionary<string, object?> Merge(Dictionary<string, object?> under, Dictionary<string, object?> over)
    {
        foreach (var (key, value) in over)
            under[key] = under.GetValueOrDefault(key) is Dictionary<string, object?> a && value is Dictionary<string, object?> b ? Merge(a, b) : value;
        return under;
    }
}
