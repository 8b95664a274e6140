using System.Reflection;
using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using Xunit;

namespace Cluster.Deploy.Tests;

/// <summary>
/// What the deploy files must agree with, read from the code (ServiceOptions, ServiceRole) and from
/// docs/METRICS.md, plus the checks that every form of deployment shares.
/// </summary>
public static class Contract
{
    public const string HealthPath = "/healthz";
    public const string MetricsPath = "/metrics";

    public static readonly ServiceRole[] Roles = Enum.GetValues<ServiceRole>();

    public static string Repo(params string[] parts) => Path.Combine([ExternalTools.RepoRoot, .. parts]);

    /// <summary>LLM_* variables that <paramref name="role"/> reads.</summary>
    public static HashSet<string> EnvVars(ServiceRole role) =>
        ServiceOptions.For(role).Select(o => o.Option.EnvironmentVariable).ToHashSet();

    public static string GrpcPortVar => Var(nameof(ServiceOptions.GrpcPort));
    public static string HttpPortVar => Var(nameof(ServiceOptions.HttpPort));
    public static string ModelVar => Var(nameof(ServiceOptions.Model));
    public static string RedisVar => Var(nameof(ServiceOptions.Redis));

    /// <summary>The variables whose values are gRPC addresses of other services, and whose.</summary>
    public static readonly Dictionary<string, ServiceRole> AddressVars = new()
    {
        [Var(nameof(ServiceOptions.Prefill))] = ServiceRole.Prefill,
        [Var(nameof(ServiceOptions.Decode))] = ServiceRole.Decode,
        [Var(nameof(ServiceOptions.CacheManager))] = ServiceRole.CacheManager,
    };

    /// <summary>The environment variable of a ServiceOptions property, by the property's name.</summary>
    public static string Var(string property) =>
        typeof(ServiceOptions).GetProperty(property)!.GetCustomAttribute<OptionAttribute>()!.EnvironmentVariable;

    /// <summary>The service's assembly, named by its project file (services/&lt;name&gt;/Cluster.X.csproj).</summary>
    public static string AssemblyName(ServiceRole role) =>
        Path.GetFileNameWithoutExtension(Directory.GetFiles(Repo("services", role.Name()), "*.csproj").Single());

    /// <summary>
    /// The checks every deployment's container environment must pass: only LLM_* variables that the
    /// role reads, the default ports, and addresses of other services that name them and their gRPC port.
    /// </summary>
    public static void CheckEnvironment(ServiceRole role, IReadOnlyDictionary<string, string?> env, string where)
    {
        var known = EnvVars(role);
        foreach (var name in env.Keys.Where(k => k.StartsWith("LLM_", StringComparison.Ordinal)))
            Assert.True(known.Contains(name), $"{where}: {name} is not an option of {role.Name()} (known: {string.Join(", ", known.Order())})");
        Assert.Equal(role.DefaultGrpcPort().ToString(), env.GetValueOrDefault(GrpcPortVar));
        Assert.Equal(role.DefaultHttpPort().ToString(), env.GetValueOrDefault(HttpPortVar));
        foreach (var (name, target) in AddressVars)
        {
            if (!known.Contains(name)) continue;
            Assert.True(env.ContainsKey(name), $"{where}: {role.Name()} needs {name} (default 127.0.0.1 is wrong in a cluster)");
            foreach (var uri in ServiceOptions.Addresses(env[name] ?? "", name))
            {
                Assert.True(ServiceHostRole(uri.Host) == target, $"{where}: {name}={uri} does not name the {target.Name()} service");
                Assert.Equal(target.DefaultGrpcPort(), uri.Port);
            }
        }
        if (known.Contains(RedisVar) && env.GetValueOrDefault(RedisVar) is { Length: > 0 } redis)
            Assert.Matches(@"^[^:/\s]+:6379$", redis);
    }

    /// <summary>The role a host name ("prefill", "llm-cluster-prefill", "prefill.ns.svc") stands for.</summary>
    public static ServiceRole? ServiceHostRole(string host)
    {
        var first = host.Split('.')[0];
        return Roles.Select(r => (ServiceRole?)r).FirstOrDefault(r => first == r!.Value.Name() || first.EndsWith("-" + r!.Value.Name(), StringComparison.Ordinal));
    }

    /// <summary>The metrics of docs/METRICS.md: name, type, labels and the jobs that export them.</summary>
    public sealed record Metric(string Name, string Type, HashSet<string> Labels, HashSet<string> Jobs);

    public static Dictionary<string, Metric> Metrics()
    {
        var result = new Dictionary<string, Metric>();
        string? job = null;
        foreach (var line in File.ReadLines(Repo("docs", "METRICS.md")))
        {
            if (line.StartsWith("## ", StringComparison.Ordinal))
                job = Regex.Match(line, @"\(job `(\w+)`\)") is { Success: true } m ? m.Groups[1].Value : "*";
            if (!line.StartsWith("| `", StringComparison.Ordinal) || job is null) continue;
            var cells = line.Split('|').Select(c => c.Trim()).ToArray();
            var names = Regex.Matches(cells[1], "`([a-z0-9_]+)`").Select(x => x.Groups[1].Value).ToList();
            foreach (var name in names)
            {
                // "as prefill": a metric shared with an earlier table; the type and labels are that table's.
                if (!result.TryGetValue(name, out var metric))
                {
                    var labels = Regex.Matches(cells[3], "`([a-z_]+)`").Select(x => x.Groups[1].Value).ToHashSet();
                    result[name] = metric = new Metric(name, cells[2], labels, []);
                }
                metric.Jobs.Add(job);
            }
        }
        Assert.True(result.Count > 20, "docs/METRICS.md: tables not found");
        Assert.All(result.Values, m => Assert.Contains(m.Type, new[] { "histogram", "gauge", "counter" }));
        return result;
    }
}
