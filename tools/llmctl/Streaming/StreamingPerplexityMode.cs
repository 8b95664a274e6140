using Cluster.Engine.Loaders;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Cluster.Engine.Compression;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.Evaluation;

namespace LlmCtl.Streaming;

/// <summary>
/// `llmctl perplexity --policy P [--policy Q ...]`: streams sequences of --tokens tokens through a cache
/// per policy, one token at a time as generation would, and reports perplexity per position bucket as a
/// table (or JSON) and optionally as an SVG plot of all the policies' curves.
/// </summary>
internal sealed class StreamingPerplexityMode
{
    private readonly Option<string[]> _policy = new("--policy") { Description = "KV-cache policy to stream with, e.g. dense, window(256), sink_window(4,252), qfilters(256,32), knorm(256,32); repeat to compare", AllowMultipleArgumentsPerToken = true };
    private readonly Option<int> _sequences = new("--sequences") { Description = "with --policy: sequences of --tokens tokens to stream", DefaultValueFactory = _ => 1 };
    private readonly Option<int> _offset = new("--offset-tokens") { Description = "with --policy: skip this many text tokens first", DefaultValueFactory = _ => 0 };
    private readonly Option<string?> _filters = new("--qfilters", "--filters") { Description = "Q-Filters safetensors (from llmctl calibrate) for qfilters" };
    private readonly Option<bool> _extrapolate = new("--extrapolate") { Description = "let dense run past the model's context" };
    private readonly Option<string?> _svg = new("--svg") { Description = "write an SVG plot of the curves to this file" };
    private readonly Option<string[]> _kvDtype = new("--kv-dtype") { Description = "round each token's K and V to fp32, bf16 or fp16 once written, as the cluster's --kv-dtype stores them (streams with --policy, dense if none); repeat to compare", AllowMultipleArgumentsPerToken = true };

    public static StreamingPerplexityMode AddOptions(Command cmd)
    {
        var mode = new StreamingPerplexityMode();
        foreach (var o in new Option[] { mode._policy, mode._sequences, mode._offset, mode._filters, mode._extrapolate, mode._svg, mode._kvDtype }) cmd.Options.Add(o);
        return mode;
    }

    public bool Requested(ParseResult r) => r.GetValue(_policy) is { Length: > 0 } || r.GetValue(_kvDtype) is { Length: > 0 };

    public int Run(ParseResult r, string? modelOption, string? tokenizerOption, string textPath, int length, bool json, int? threads, string? weights = null)
    {
        var path = ModelSource.ResolvePath(modelOption);
        using var m = ModelSource.Load(path, threads, weights);
        var c = m.Config;
        var filtersPath = r.GetValue(_filters);
        var options = new PolicyOptions(filtersPath is null ? null : QFilters.Load(filtersPath, c.Layers, c.KvHeads, c.HeadDim), r.GetValue(_extrapolate));
        var policies = (r.GetValue(_policy) is { Length: > 0 } given ? given : ["dense"]).Select(p => KvPolicyRegistry.Parse(p, options)).ToList();
        var precisions = (r.GetValue(_kvDtype) is { Length: > 0 } dtypes ? dtypes : ["fp32"]).Select(Cluster.Engine.KvCache.KvPrecisions.Parse).ToList();
        foreach (var p in policies)
            if (!ContextLimit.Fits(p, 0, length, c.MaxPositions))
                throw new ArgumentException($"dense cannot stream {length} tokens past the model's context of {c.MaxPositions}; pass --extrapolate to measure it anyway");
        var tok = ModelLoader.LoadTokenizer(path, c, tokenizerOption);
        var sequences = TextSequences.Take(tok, File.ReadAllText(textPath), r.GetValue(_offset), r.GetValue(_sequences), length);
        var edges = StreamingPerplexity.DefaultEdges(length);

        var results = new List<StreamingPerplexityResult>();
        var seconds = new List<double>();
        int total = sequences.Count * (length - 1);
        foreach (var (policy, precision) in policies.SelectMany(p => precisions.Select(d => (p, d))))
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            results.Add(StreamingPerplexity.Evaluate(m, sequences, policy, edges,
                n => { if (n % 4096 == 0 || n == total) Console.Error.Write($"\r{policy.Name}: {n}/{total} tokens"); }, precision));
            seconds.Add(sw.Elapsed.TotalSeconds);
            Console.Error.WriteLine($" ({sw.Elapsed.TotalSeconds:F1} s)");
        }

        if (r.GetValue(_svg) is string svg)
        {
            File.WriteAllText(svg, PerplexityPlot.Svg(results, $"{Path.GetFileName(path)}: perplexity by position, {sequences.Count} x {length} tokens"));
            Console.Error.WriteLine($"wrote {svg}");
        }
        if (json)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = path,
                sequences = sequences.Count,
                tokens_per_sequence = length,
                offset_tokens = r.GetValue(_offset),
                policies = results.Select((x, i) => new
                {
                    policy = x.Policy,
                    perplexity = Finite(x.Perplexity),
                    mean_nll = Finite(x.NllSum / x.Tokens),
                    tokens_scored = x.Tokens,
                    seconds = seconds[i],
                    buckets = x.Buckets.Select(b => new { start = b.Start, end = b.End, perplexity = Finite(b.Perplexity), mean_nll = Finite(b.NllSum / b.Tokens), tokens = b.Tokens }),
                }),
            }));
        else
            Console.Write(Table(results));
        return 0;
    }

    /// <summary>A Markdown table: one row per policy, one column per bucket, then the overall perplexity.</summary>
    public static string Table(IReadOnlyList<StreamingPerplexityResult> results)
    {
        var buckets = results.SelectMany(x => x.Buckets).Select(b => (b.Start, b.End)).Distinct().OrderBy(b => b.Start).ToList();
        string Label(int t) => t >= 1024 && t % 1024 == 0 ? $"{t / 1024}k" : t.ToString(CultureInfo.InvariantCulture);
        var w = new StringWriter(CultureInfo.InvariantCulture);
        w.WriteLine($"| policy | {string.Join(" | ", buckets.Select(b => $"{Label(b.Start)}-{Label(b.End)}"))} | all |");
        w.WriteLine($"|---|{string.Concat(buckets.Select(_ => "---:|"))}---:|");
        foreach (var x in results)
        {
            var cells = buckets.Select(b => x.Buckets.FirstOrDefault(y => y.Start == b.Start) is { } y ? Format(y.Perplexity) : "");
            w.WriteLine($"| {x.Policy} | {string.Join(" | ", cells)} | {Format(x.Perplexity)} |");
        }
        return w.ToString();
    }

    /// <summary>JSON has no infinity: a perplexity (or a mean NLL) past double's range, from a collapsed cache, is null.</summary>
    private static double? Finite(double v) => double.IsFinite(v) ? v : null;

    private static string Format(double ppl) => !double.IsFinite(ppl) ? "inf" : ppl >= 1000 ? ppl.ToString("F0", CultureInfo.InvariantCulture) : ppl.ToString("F3", CultureInfo.InvariantCulture);
}
