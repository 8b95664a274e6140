using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;
using Xunit;

namespace Cluster.Deploy.Tests;

/// <summary>`kubectl kustomize deploy/k8s/manifests` renders, and its objects agree with the code.</summary>
public class KubernetesManifestTests
{
    [SkippableFact]
    public void Each_service_runs_its_image_with_only_its_own_options_the_default_ports_and_healthz_probes()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        foreach (var role in Contract.Roles)
        {
            var deployment = k8s.Deployment(role);
            var container = Kubernetes.Container(deployment);
            var where = $"manifests Deployment {deployment.At("metadata", "name")}";
            Assert.Equal($"llm-cluster/{role.Name()}:latest", container["image"].Text());
            Assert.Equal(role.DefaultGrpcPort(), Kubernetes.Port(container, "grpc"));
            Assert.Equal(role.DefaultHttpPort(), Kubernetes.Port(container, "http"));
            Contract.CheckEnvironment(role, k8s.Environment(container), where);
            foreach (var probe in new[] { "readinessProbe", "livenessProbe" })
            {
                Assert.Equal(Contract.HealthPath, container.At(probe, "httpGet", "path").Text());
                Assert.Equal(role.DefaultHttpPort(), Kubernetes.Port(container, container.At(probe, "httpGet", "port")));
            }
            var annotations = deployment.At("spec", "template", "metadata", "annotations");
            Assert.Equal(role.DefaultHttpPort().ToString(), annotations.At("prometheus.io/port").Text());
            Assert.Equal(Contract.MetricsPath, annotations.At("prometheus.io/path").Text());
            Assert.Equal(true, deployment.At("spec", "template", "spec", "securityContext", "runAsNonRoot"));
            Assert.True(Kubernetes.Selects(deployment.At("spec", "selector", "matchLabels"), deployment.At("spec", "template", "metadata", "labels")));
            if (Contract.EnvVars(role).Contains(Contract.ModelVar))
            {
                var mount = container["volumeMounts"].Seq("volumeMounts").Single(m => m.At("mountPath").Text() == "/models");
                Assert.Equal(true, mount.At("readOnly"));
            }
        }
    }

    [SkippableFact]
    public void Services_give_each_service_its_ports_and_the_names_the_address_settings_use()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        foreach (var role in Contract.Roles)
        {
            var deployment = k8s.Deployment(role);
            var container = Kubernetes.Container(deployment);
            var service = k8s.Get("Service", role.Name());
            Assert.True(Kubernetes.Selects(service.At("spec", "selector"), deployment.At("spec", "template", "metadata", "labels")));
            var ports = service.At("spec", "ports").Seq("ports").ToDictionary(p => p.At("name").Text()!);
            Assert.Equal(role.DefaultGrpcPort().ToString(), ports["grpc"].At("port").Text());
            Assert.Equal(role.DefaultHttpPort().ToString(), ports["http"].At("port").Text());
            Assert.Equal(role.DefaultGrpcPort(), Kubernetes.Port(container, ports["grpc"].At("targetPort")));
            Assert.Equal(role.DefaultHttpPort(), Kubernetes.Port(container, ports["http"].At("targetPort")));
            // Every address a container is given names a Service of this render.
            foreach (var (name, value) in k8s.Environment(container).Where(e => Contract.AddressVars.ContainsKey(e.Key)))
                Assert.Contains(new Uri(value!).Host, k8s.OfKind("Service").Select(s => s.At("metadata", "name").Text()));
        }
        var redis = k8s.Environment(Kubernetes.Container(k8s.Deployment(ServiceRole.Gateway)))[Contract.RedisVar]!.Split(':');
        Assert.Equal("6379", k8s.Get("Service", redis[0]).At("spec", "ports").Seq("ports").Single().At("port").Text());
        var args = Kubernetes.Container(k8s.Get("StatefulSet", redis[0]))["args"].Seq("args").Select(a => a.Text()).ToList();
        Assert.Equal("yes", args[args.IndexOf("--appendonly") + 1]);
    }

    [SkippableFact]
    public void Cache_manager_is_one_replica_and_the_workers_have_disruption_budgets()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        var cache = k8s.Deployment(ServiceRole.CacheManager);
        Assert.Equal(1L, cache.At("spec", "replicas"));
        Assert.Equal("Recreate", cache.At("spec", "strategy", "type").Text());
        foreach (var role in new[] { ServiceRole.Gateway, ServiceRole.Prefill, ServiceRole.Decode })
        {
            var labels = k8s.Deployment(role).At("spec", "template", "metadata", "labels");
            Assert.Single(k8s.OfKind("PodDisruptionBudget"), p => Kubernetes.Selects(p.At("spec", "selector", "matchLabels"), labels));
        }
    }

    [SkippableFact]
    public void Network_policies_admit_outside_traffic_only_to_the_gateway()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        var policies = k8s.OfKind("NetworkPolicy").ToList();
        foreach (var role in Contract.Roles)
        {
            var deployment = k8s.Deployment(role);
            var labels = deployment.At("spec", "template", "metadata", "labels");
            var selecting = policies.Where(p => Kubernetes.Selects(p.At("spec", "podSelector", "matchLabels"), labels)).ToList();
            Assert.NotEmpty(selecting);   // a pod no policy selects admits everything
            var rules = selecting.SelectMany(p => p.At("spec", "ingress").Seq("ingress")).ToList();
            var open = rules.Where(r => r.At("from") is null).ToList();   // rules without "from" admit any source
            if (role == ServiceRole.Gateway)
            {
                var ports = open.SelectMany(r => r.At("ports").Seq("ports")).Select(p => Kubernetes.Port(Kubernetes.Container(deployment), p.At("port"))).ToList();
                Assert.Equal(new[] { role.DefaultGrpcPort() }, ports);
            }
            else Assert.Empty(open);
            // From other namespaces, only the metrics port (Prometheus).
            foreach (var rule in rules.Where(r => r.At("from") is List<object?> from && from.Any(f => f.At("namespaceSelector") is not null)))
                Assert.Equal(new[] { role.DefaultHttpPort() }, rule.At("ports").Seq("ports").Select(p => Kubernetes.Port(Kubernetes.Container(deployment), p.At("port"))));
        }
    }

    [SkippableFact]
    public void Decode_autoscales_on_a_metric_that_decode_exports()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        var hpa = k8s.OfKind("HorizontalPodAutoscaler").Single();
        Assert.Equal("Deployment", hpa.At("spec", "scaleTargetRef", "kind").Text());
        Assert.Equal(k8s.Deployment(ServiceRole.Decode).At("metadata", "name").Text(), hpa.At("spec", "scaleTargetRef", "name").Text());
        var metric = hpa.At("spec", "metrics").Seq("metrics").Single().At("pods", "metric", "name").Text()!;
        Assert.Contains("decode", Contract.Metrics()[metric].Jobs);
    }

    [SkippableFact]
    public void Optional_service_monitor_scrapes_the_metrics_port_with_one_job_per_service()
    {
        var monitor = Yaml.LoadFile(Contract.Repo("deploy", "k8s", "manifests", "optional", "servicemonitor.yaml"));
        Assert.Equal("app.kubernetes.io/component", monitor.At("spec", "jobLabel").Text());
        var endpoint = monitor.At("spec", "endpoints").Seq("endpoints").Single();
        Assert.Equal("http", endpoint.At("port").Text());
        Assert.Equal(Contract.MetricsPath, endpoint.At("path").Text());
        var components = monitor.At("spec", "selector", "matchExpressions").Seq("matchExpressions").Single().At("values").Seq("values").Select(v => v.Text());
        Assert.Equal(Contract.Roles.Select(r => r.Name()).Order(), components.Order());
    }

    [SkippableFact]
    public void Manifests_use_the_helm_charts_default_settings_and_resources()
    {
        if (Kubernetes.Render() is not { } k8s) return;
        var chart = Contract.Repo("deploy", "k8s", "helm", "llm-cluster");
        var values = Yaml.LoadFile(Path.Combine(chart, "values.yaml"));
        // The chart's ConfigMap template says which value each key comes from.
        var keys = Regex.Matches(File.ReadAllText(Path.Combine(chart, "templates", "configmap.yaml")), @"^  ([a-z-]+): \{\{ \.Values\.([\w.]+) \| quote \}\}", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => values.At(m.Groups[2].Value.Split('.')).Text());
        var data = k8s.Get("ConfigMap", "llm-cluster-config")["data"].Map("data");
        foreach (var (key, value) in data)
            Assert.True(keys.TryGetValue(key, out var expected) && expected == value.Text(), $"manifests ConfigMap {key}={value.Text()}, chart default {expected ?? "missing"}");
        foreach (var role in Contract.Roles)
            Assert.Equal(Flatten(values.At(role.Name(), "resources")), Flatten(Kubernetes.Container(k8s.Deployment(role)).At("resources")));
    }

    private static string Flatten(object? node) => node switch
    {
        Dictionary<string, object?> m => "{" + string.Join(",", m.OrderBy(kv => kv.Key).Select(kv => kv.Key + ":" + Flatten(kv.Value))) + "}",
        _ => node.Text() ?? "",
    };
}
