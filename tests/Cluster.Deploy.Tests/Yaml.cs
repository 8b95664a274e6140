using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Cluster.Deploy.Tests;

/// <summary>
/// YAML as plain trees: maps are Dictionary&lt;string, object?&gt;, sequences List&lt;object?&gt;, plain
/// scalars typed as YAML 1.2's core schema types them (null, bool, long, double), quoted ones strings,
/// so that the JSON-schema check sees what Helm sees.
/// </summary>
public static class Yaml
{
    public static List<object?> LoadAll(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return stream.Documents.Select(d => Convert(d.RootNode)).Where(d => d is not null).ToList();
    }

    public static Dictionary<string, object?> LoadFile(string path) =>
        LoadAll(File.ReadAllText(path)).Single().Map($"{path}: document");

    private static object? Convert(YamlNode node) => node switch
    {
        YamlMappingNode m => m.Children.ToDictionary(kv => ((YamlScalarNode)kv.Key).Value!, kv => Convert(kv.Value)),
        YamlSequenceNode s => s.Children.Select(Convert).ToList(),
        YamlScalarNode { Style: ScalarStyle.Plain } p => Typed(p.Value ?? ""),
        YamlScalarNode q => q.Value ?? "",
        _ => throw new InvalidDataException($"unsupported YAML node {node.NodeType} at {node.Start}"),
    };

    private static object? Typed(string v)
    {
        if (v is "" or "~" or "null" or "Null" or "NULL") return null;
        if (v is "true" or "True" or "TRUE") return true;
        if (v is "false" or "False" or "FALSE") return false;
        if (long.TryParse(v, System.Globalization.NumberStyles.AllowLeadingSign, null, out var l)) return l;
        if (double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var d)) return d;
        return v;
    }

    public static Dictionary<string, object?> Map(this object? node, string what) =>
        node as Dictionary<string, object?> ?? throw new InvalidDataException($"{what} should be a map, is {Describe(node)}");

    public static List<object?> Seq(this object? node, string what) =>
        node as List<object?> ?? throw new InvalidDataException($"{what} should be a list, is {Describe(node)}");

    /// <summary>The value at a path of map keys, or null where any step is missing.</summary>
    public static object? At(this object? node, params string[] path)
    {
        foreach (var key in path)
            node = node is Dictionary<string, object?> m && m.TryGetValue(key, out var next) ? next : null;
        return node;
    }

    /// <summary>A scalar as Kubernetes and compose read it (numbers and booleans as written).</summary>
    public static string? Text(this object? node) => node switch
    {
        null => null,
        bool b => b ? "true" : "false",
        double d => d.ToString(System.Globalization.CultureInfo.InvariantCulture),
        _ => node.ToString(),
    };

    private static string Describe(object? node) => node?.GetType().Name ?? "missing";
}
