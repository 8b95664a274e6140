using Cluster.Serving.Hosting;
using Cluster.Tests;

namespace Cluster.Deploy.Tests;

/// <summary>deploy/k8s/manifests rendered by `kubectl kustomize`, as plain trees, with helpers to
/// find each service's objects and the environment its container gets.</summary>
public sealed class Kubernetes
{
    public List<Dictionary<string, object?>> Objects { get; }

    private Kubernetes(List<Dictionary<string, object?>> objects) => Objects = objects;

    private static readonly Lazy<Kubernetes?> Rendered = new(() =>
    {
        if (ExternalCommands.Find("kubectl") is not { } kubectl) return null;
        var (code, stdout, stderr) = ExternalTools.Run(kubectl, ["kustomize", Contract.Repo("deploy", "k8s", "manifests")], TimeSpan.FromSeconds(120));
        if (code != 0) throw new InvalidOperationException($"kubectl kustomize failed: {stderr}");
        return new Kubernetes(Yaml.LoadAll(stdout).Select((o, i) => o.Map($"object {i}")).ToList());
    });

    /// <summary>The rendered manifests, or null (the test returns) where kubectl is missing outside CI.</summary>
    public static Kubernetes? Render() => ExternalCommands.Ensure("kubectl", "kubectl") ? Rendered.Value : null;

    public IEnumerable<Dictionary<string, object?>> OfKind(string kind) => Objects.Where(o => o.At("kind").Text() == kind);

    public Dictionary<string, object?> Get(string kind, string name) =>
        OfKind(kind).SingleOrDefault(o => o.At("metadata", "name").Text() == name) ?? throw new InvalidDataException($"no {kind} {name}");

    public static string Component(Dictionary<string, object?> o) => o.At("spec", "template", "metadata", "labels", "app.kubernetes.io/component").Text()
        ?? o.At("metadata", "labels", "app.kubernetes.io/component").Text() ?? "";

    public Dictionary<string, object?> Deployment(ServiceRole role) => OfKind("Deployment").Single(d => Component(d) == role.Name());

    public static Dictionary<string, object?> Container(Dictionary<string, object?> workload) =>
        workload.At("spec", "template", "spec", "containers").Seq("containers").Single().Map("container");

    /// <summary>The container's environment with configMapKeyRef values looked up in the rendered ConfigMaps.</summary>
    public Dictionary<string, string?> Environment(Dictionary<string, object?> container) =>
        (container.At("env") as List<object?> ?? []).Select(e => e.Map("env entry")).ToDictionary(
            e => e["name"].Text()!,
            e => e.At("valueFrom") is { } from
                ? Get("ConfigMap", from.At("configMapKeyRef", "name").Text()!).At("data", from.At("configMapKeyRef", "key").Text()!).Text()
                    ?? throw new InvalidDataException($"{e["name"]}: ConfigMap key {from.At("configMapKeyRef", "key")} missing")
                : e.At("value").Text() ?? "");

    /// <summary>The container port a probe or Service targets (by name or number).</summary>
    public static int Port(Dictionary<string, object?> container, object? port) => port switch
    {
        long n => (int)n,
        string name => (int)(long)container["ports"].Seq("ports").Single(p => p.At("name").Text() == name).At("containerPort")!,
        _ => throw new InvalidDataException($"bad port {port}"),
    };

    /// <summary>True when every label of <paramref name="selector"/> is on <paramref name="labels"/>.</summary>
    public static bool Selects(object? selector, object? labels) =>
        selector is Dictionary<string, object?> s && s.Count > 0 && labels is Dictionary<string, object?> l
        && s.All(kv => l.TryGetValue(kv.Key, out var v) && v.Text() == kv.Value.Text());
}
