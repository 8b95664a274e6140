using Cluster.Serving.Hosting;
using Cluster.Engine.Compression;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Serving.Mapping;

/// <summary>KV policies between the wire's <see cref="KvPolicy"/> and the engine's spec strings
/// ("dense", "window(256)", "sink_window(4,252)", "qfilters(256,32)", "knorm(256,32)").</summary>
public static class PolicyMapping
{
    /// <summary>The spec string of a wire policy; null when none is set (the caller's default applies).</summary>
    public static string? ToSpec(KvPolicy? policy) => policy?.PolicyCase switch
    {
        KvPolicy.PolicyOneofCase.Dense => "dense",
        KvPolicy.PolicyOneofCase.Window => $"window({policy.Window.Window})",
        KvPolicy.PolicyOneofCase.SinkWindow => $"sink_window({(policy.SinkWindow.HasSink ? policy.SinkWindow.Sink : 4)},{policy.SinkWindow.Window})",
        KvPolicy.PolicyOneofCase.Qfilters => $"qfilters({policy.Qfilters.Budget},{policy.Qfilters.Window})",
        KvPolicy.PolicyOneofCase.Knorm => $"knorm({policy.Knorm.Budget},{policy.Knorm.Window})",
        _ => null,
    };

    /// <summary>Parses and checks a spec; INVALID_ARGUMENT with the registry's reason when it is not a policy.</summary>
    public static KvCompressionPolicy Parse(string spec, PolicyOptions? options = null)
    {
        try
        {
            return KvPolicyRegistry.Parse(spec, options);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
        {
            throw new InvalidRequestException($"kv_policy '{spec}': {e.Message}");
        }
    }

    /// <summary>The wire form of a spec (for handles); a spec the wire cannot express becomes unset.</summary>
    public static KvPolicy ToWire(string spec)
    {
        var name = spec.Split('(')[0];
        int[] args = spec.Contains('(') ? spec[(spec.IndexOf('(') + 1)..spec.LastIndexOf(')')].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray() : [];
        return name switch
        {
            "dense" => new KvPolicy { Dense = new LlmCluster.V1.DensePolicy() },
            "window" when args.Length == 1 => new KvPolicy { Window = new LlmCluster.V1.WindowPolicy { Window = args[0] } },
            "sink_window" when args.Length == 2 => new KvPolicy { SinkWindow = new LlmCluster.V1.SinkWindowPolicy { Sink = args[0], Window = args[1] } },
            "qfilters" when args.Length == 2 => new KvPolicy { Qfilters = new ScoredPolicy { Budget = args[0], Window = args[1] } },
            "knorm" when args.Length == 2 => new KvPolicy { Knorm = new ScoredPolicy { Budget = args[0], Window = args[1] } },
            _ => new KvPolicy(),
        };
    }
}
