using System.Globalization;
using System.Text.RegularExpressions;
using Cluster.Engine.Compression.Calibration;

namespace Cluster.Engine.Compression;

/// <summary>
/// Parses policy specs ("dense", "window(256)", "sink_window(4,252)", "qfilters(256,32)",
/// "knorm(256,32)"): one entry per policy, so a new policy is one file plus one line here. A wrapper
/// such as "rerotate(knorm(256,32))" takes a policy spec as its argument.
/// </summary>
public static partial class KvPolicyRegistry
{
    private sealed record Entry(int MinArgs, int MaxArgs, string Usage, Func<int[], PolicyOptions, KvCompressionPolicy> Create);

    private static readonly Dictionary<string, Entry> Entries = new()
    {
        ["dense"] = new(0, 0, "dense", (_, o) => new DensePolicy(o.AllowExtrapolation)),
        ["window"] = new(1, 1, "window(W)", (a, _) => new WindowPolicy(a[0])),
        ["sink_window"] = new(1, 2, "sink_window(S,W) or sink_window(W) with S = 4",
            (a, _) => a.Length == 1 ? new SinkWindowPolicy(SinkWindowPolicy.DefaultSinks, a[0]) : new SinkWindowPolicy(a[0], a[1])),
        ["qfilters"] = new(2, 2, "qfilters(budget,W)", (a, o) => new QFiltersPolicy(a[0], a[1],
            o.Filters ?? throw new ArgumentException("qfilters needs calibrated Q-Filters (made by llmctl calibrate): pass the file with --qfilters FILE"))),
        ["knorm"] = new(2, 2, "knorm(budget,W)", (a, _) => new KNormPolicy(a[0], a[1])),
    };

    private static readonly Dictionary<string, Func<KvCompressionPolicy, KvCompressionPolicy>> Wrappers = new()
    {
        ["rerotate"] = inner => new RerotatedPolicy(inner),
    };

    /// <summary>The registered policy names, then the wrapper names.</summary>
    public static IReadOnlyCollection<string> Names => [.. Entries.Keys, .. Wrappers.Keys];

    /// <summary>Parses a spec; throws <see cref="ArgumentException"/> naming what is wrong.</summary>
    public static KvCompressionPolicy Parse(string spec, PolicyOptions? options = null)
    {
        var w = CallPattern().Match(spec ?? "");
        if (w.Success && Wrappers.TryGetValue(w.Groups[1].Value, out var wrap)) return wrap(Parse(w.Groups[2].Value, options));
        if (w.Success && !Entries.ContainsKey(w.Groups[1].Value)) throw new ArgumentException($"unknown policy '{w.Groups[1].Value}'; known: {Usage}");
        var m = SpecPattern().Match(spec ?? "");
        if (!m.Success) throw new ArgumentException($"policy '{spec}' is not of the form name or name(n,...); known: {Usage}");
        var name = m.Groups[1].Value;
        if (!Entries.TryGetValue(name, out var e)) throw new ArgumentException($"unknown policy '{name}'; known: {Usage}");
        var args = m.Groups[2].Success && m.Groups[2].Value.Trim().Length > 0
            ? m.Groups[2].Value.Split(',').Select(a => int.TryParse(a.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
                : throw new ArgumentException($"policy '{spec}': '{a.Trim()}' is not an integer")).ToArray()
            : [];
        if (args.Length < e.MinArgs || args.Length > e.MaxArgs) throw new ArgumentException($"policy '{spec}': expected {e.Usage}");
        try
        {
            return e.Create(args, options ?? new PolicyOptions());
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new ArgumentException($"policy '{spec}': {ex.Message.Split(" (Parameter")[0]}");
        }
    }

    private static string Usage => string.Join(", ", Entries.Values.Select(e => e.Usage).Concat(Wrappers.Keys.Select(k => $"{k}(policy)")));

    [GeneratedRegex(@"^\s*([A-Za-z0-9_]+)\s*\((.*)\)\s*$")]
    private static partial Regex CallPattern();

    [GeneratedRegex(@"^\s*([A-Za-z0-9_]+)\s*(?:\(([^)]*)\))?\s*$")]
    private static partial Regex SpecPattern();
}

/// <summary>What some policies need beyond their numbers.</summary>
/// <param name="Filters">Calibrated Q-Filters, for qfilters.</param>
/// <param name="AllowExtrapolation">Lets dense run past the model's context.</param>
public sealed record PolicyOptions(QFilters? Filters = null, bool AllowExtrapolation = false);
