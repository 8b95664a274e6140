using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;

namespace Cluster.Deploy.Tests;

/// <summary>docker-compose.yml as compose reads it: ${VAR:-default} interpolation (with an empty
/// host environment unless given) and same-file `extends`.</summary>
public static class Compose
{
    public static Dictionary<string, object?> Load(IReadOnlyDictionary<string, string>? hostEnv = null)
    {
        var text = Interpolate(File.ReadAllText(Contract.Repo("docker-compose.yml")), hostEnv ?? new Dictionary<string, string>());
        var file = Yaml.LoadAll(text).Single().Map("docker-compose.yml");
        var services = file["services"].Map("services");
        foreach (var (name, def) in services.ToList())
            services[name] = Extend(services, def.Map(name));
        return file;
    }

    public static Dictionary<string, object?> Services(Dictionary<string, object?> file) => file["services"].Map("services");

    /// <summary>The environment compose gives a service (map or KEY=VALUE list form).</summary>
    public static Dictionary<string, string?> Environment(Dictionary<string, object?> service) => service.At("environment") switch
    {
        Dictionary<string, object?> m => m.ToDictionary(kv => kv.Key, kv => kv.Value.Text()),
        List<object?> l => l.Select(e => e.Text()!.Split('=', 2)).ToDictionary(p => p[0], p => p.ElementAtOrDefault(1)),
        _ => [],
    };

    /// <summary>The compose services that run <paramref name="role"/>'s image (the GPU variants too).</summary>
    public static IEnumerable<(string Name, Dictionary<string, object?> Service)> Running(Dictionary<string, object?> file, ServiceRole role) =>
        Services(file).Where(s => s.Value.At("build", "target").Text() == role.Name()).Select(s => (s.Key, s.Value.Map(s.Key)));

    // Compose's rules: ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR-default} (when unset), $$ is '$'.
    public static string Interpolate(string text, IReadOnlyDictionary<string, string> env) =>
        Regex.Replace(text, @"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", m =>
        {
            if (m.Value == "$$") return "$";
            var set = env.TryGetValue(m.Groups[1].Value, out var v);
            return m.Groups[2].Value switch
            {
                ":-" => set && v!.Length > 0 ? v : m.Groups[3].Value,
                "-" => set ? v! : m.Groups[3].Value,
                _ => v ?? "",
            };
        });

    private static Dictionary<string, object?> Extend(Dictionary<string, object?> services, Dictionary<string, object?> service)
    {
        if (service.At("extends", "service").Text() is not { } baseName) return service;
        var merged = new Dictionary<string, object?>(Extend(services, services[baseName].Map(baseName)));
        foreach (var (key, value) in service.Where(kv => kv.Key != "extends"))
            merged[key] = key == "environment" && merged.At(key) is Dictionary<string, object?> baseEnv && value is Dictionary<string, object?> env
                ? baseEnv.Concat(env).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.Last().Value)
                : value;
        return merged;
    }
}
