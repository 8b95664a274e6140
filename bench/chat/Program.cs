using Cluster.Serving.Routing;
using Grpc.Net.Client;
// Endless conversations (issue 12): one session of N short turns through an in-process cluster
// (four services on loopback), each turn sending only its new tokens; per turn the gateway's TTFT,
// the KV tokens seen and the cache manager's llm_kv_stored_bytes go to a CSV, plotted as an SVG.
// The same conversation runs locally (Cluster.Engine's Conversation) and every turn's tokens must
// match. At the turns given by --compare the stateless way is timed too: a new session re-sending the
// whole history (its last context - max_tokens - 1 tokens when longer than that, BOS first: the most
// a stateless request can send to a 512-token model).
// Usage: dotnet run -c Release -- MODEL OUT_DIR [--turns 300] [--policy sink_window(4,252)] [--compare 10,100,300] [--qfilters FILE]
using System.Diagnostics;
using System.Globalization;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.Loaders;
using Cluster.Engine.Sampling;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using LlmCluster.V1;

string model = args[0], outDir = args[1];
int turns = Arg("--turns", 300);
string policy = args.SkipWhile(a => a != "--policy").Skip(1).FirstOrDefault() ?? "sink_window(4,252)";
string? qfilters = args.SkipWhile(a => a != "--qfilters").Skip(1).FirstOrDefault(); // for the qfilters policy
string[] Q(params string[] a) => qfilters is null ? a : [.. a, "--qfilters", qfilters];
var compare = (args.SkipWhile(a => a != "--compare").Skip(1).FirstOrDefault() ?? "10,100,300").Split(',').Select(int.Parse).ToHashSet();
const int maxTokens = 12, repeats = 5;
string[] lines =
[
    "Once upon a time, there was a little girl named Lily.", "She went to the park.", "Then what happened?",
    "The dog was happy.", "Tom said hello.", "They played all day.", "What did mom say?", "The sun was big and warm.",
];
Directory.CreateDirectory(outDir);

ServiceOptions Opts(ServiceRole role, params string[] a) =>
    ServiceOptions.Parse(role, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", .. a], new Dictionary<string, string?>());
await using var cm = await ServiceHost.StartAsync(Opts(ServiceRole.CacheManager, Q()), Cluster.CacheManager.CacheManagerService.CreateAsync);
string cmAddress = cm.GrpcAddress.ToString();
await using var prefill = await ServiceHost.StartAsync(Opts(ServiceRole.Prefill, Q("--model", model, "--cache-manager", cmAddress)), Cluster.Prefill.PrefillService.CreateAsync);
await using var decode = await ServiceHost.StartAsync(Opts(ServiceRole.Decode, Q("--model", model, "--cache-manager", cmAddress)), Cluster.Decode.DecodeService.CreateAsync);
await using var gateway = await ServiceHost.StartAsync(Opts(ServiceRole.Gateway, Q("--model", model, "--cache-manager", cmAddress,
    "--prefill", prefill.GrpcAddress.ToString(), "--decode", decode.GrpcAddress.ToString())), Cluster.Gateway.GatewayService.CreateAsync);
using var client = GrpcChannels.Create(gateway.GrpcAddress);
await Task.Delay(2500); // the gateway's first health round

using var local = ModelLoader.Load(model);
var tok = ModelLoader.LoadTokenizer(model, local.Config);
using var reference = new Conversation(local, KvPolicyRegistry.Parse(policy,
    new PolicyOptions(qfilters is null ? null : Cluster.Engine.Compression.Calibration.QFilters.Load(qfilters))), tok);
string session = Guid.NewGuid().ToString("N");
var history = new List<int>();
using var csv = new StreamWriter(Path.Combine(outDir, "turns.csv"));
csv.WriteLine("turn,prompt_tokens,generated,kv_tokens_seen,ttft_ms,tpot_ms,kv_stored_bytes");
using var scrape = new HttpClient(); // the cache manager's /metrics, as Prometheus reads it
var comparisons = new List<string>();
var ttfts = new List<double>();
var stored = new List<double>();
int mismatches = 0;
for (int t = 0; t < turns; t++)
{
    var p = new SamplingParameters { Temperature = 0.8f, TopP = 0.95f, Seed = 1000 + t, MaxTokens = maxTokens };
    var prompt = tok.Encode(lines[t % lines.Length], addBos: t == 0);
    var expected = GenerationOutput.Collect(reference.Turn(prompt, p.WithResolvedSeed())).Single();
    var (ids, timings, _) = await Generate(session, prompt, p);
    if (!ids.SequenceEqual(expected.Ids)) mismatches++;
    history.AddRange(prompt);
    double bytes = Gauge(await scrape.GetStringAsync($"http://{cm.HttpEndPoint}/metrics"), "llm_kv_stored_bytes");
    ttfts.Add(timings.TtftSeconds * 1e3);
    stored.Add(bytes);
    csv.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{t + 1},{prompt.Length},{ids.Count},{reference.TokensSeen},{timings.TtftSeconds * 1e3:F2},{timings.TpotSeconds * 1e3:F2},{bytes}"));
    if (compare.Contains(t + 1))
    {
        // The stateless way: a new session with the history up to this turn's prompt.
        int room = local.Config.MaxPositions - maxTokens - 1;
        int[] resent = history.Count <= room ? [.. history] : [local.Config.BosId, .. history.Skip(history.Count - room + 1)];
        var stateless = new List<double>();
        for (int r = -1; r < repeats; r++) // one warm-up, then the measured ones
        {
            var once = await Generate("", resent, p);
            if (r >= 0) stateless.Add(once.Timings.TtftSeconds * 1e3);
            // Released at once, so that llm_kv_stored_bytes shows the conversation's KV alone.
            await new LlmCluster.V1.Gateway.GatewayClient(client).DeleteSessionAsync(new DeleteSessionRequest { SessionId = once.Session });
        }
        // Continuing: the median over this turn and the four before it.
        double cont = Median(ttfts.Skip(Math.Max(0, ttfts.Count - 5)).ToList()), whole = Median(stateless);
        comparisons.Add(string.Create(CultureInfo.InvariantCulture, $"| {t + 1} | {history.Count} | {resent.Length} | {whole:F1} | {cont:F1} | {whole / cont:F1} |"));
    }
    history.AddRange(ids);
}
csv.Flush();
File.WriteAllText(Path.Combine(outDir, "ttft.svg"), Plot(ttfts, stored));
Console.WriteLine($"turns {turns}, policy {policy}, token mismatches vs local: {mismatches} turns");
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"TTFT ms: median turns 1-10 {Median(ttfts.Take(10).ToList()):F1}, turns {turns - 9}-{turns} {Median(ttfts.TakeLast(10).ToList()):F1}; KV stored bytes: after turn 10 {stored[Math.Min(9, stored.Count - 1)]}, max {stored.Max()}, last {stored[^1]}"));
Console.WriteLine("| turn | history tokens | re-sent tokens | TTFT re-sending (ms, median of 5) | TTFT continuing (ms, median of 5 turns) | ratio |");
Console.WriteLine("|---|---|---|---|---|---|");
foreach (var c in comparisons) Console.WriteLine(c);
return mismatches == 0 ? 0 : 1;

async Task<(List<int> Ids, Timings Timings, string Session)> Generate(string id, int[] prompt, SamplingParameters p)
{
    var request = new GenerateRequest { SessionId = id, TokenIds = new TokenIds { Ids = { prompt } }, Sampling = SamplingWire.FromEngine(p), KvPolicy = PolicyMapping.ToWire(policy) };
    using var call = new LlmCluster.V1.Gateway.GatewayClient(client).Generate(request);
    var ids = new List<int>();
    Timings? timings = null;
    string started = "";
    await foreach (var r in call.ResponseStream.ReadAllAsync(default))
    {
        if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Started) started = r.Started.SessionId;
        else if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk) ids.AddRange(r.Chunk.TokenIds);
        else if (r.ResponseCase == GenerateResponse.ResponseOneofCase.Complete) timings = r.Complete.Timings;
    }
    return (ids, timings ?? throw new InvalidOperationException("no completion"), started);
}

int Arg(string name, int fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() is { } v ? int.Parse(v) : fallback;

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

static double Gauge(string scrape, string name) =>
    scrape.Split('\n').Where(l => l.StartsWith(name + " ", StringComparison.Ordinal) || l.StartsWith(name + "{", StringComparison.Ordinal))
        .Select(l => double.Parse(l.Split(' ')[1], CultureInfo.InvariantCulture)).FirstOrDefault(); // "name{labels} value [timestamp]"

// TTFT per turn (blue, left axis) and KV bytes stored (orange, right axis), both from 0.
static string Plot(List<double> ttft, List<double> bytes)
{
    const int w = 800, h = 360, l = 60, r = 70, top = 30, bottom = 40;
    double maxT = Math.Max(1, ttft.Max()) * 1.1, maxB = Math.Max(1, bytes.Max()) * 1.1;
    string Line(List<double> ys, double max, string color) => $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.2\" points=\"" +
        string.Join(' ', ys.Select((y, i) => string.Create(CultureInfo.InvariantCulture, $"{l + (w - l - r) * i / (double)Math.Max(1, ys.Count - 1):F1},{h - bottom - (h - top - bottom) * y / max:F1}"))) + "\"/>";
    var svg = new System.Text.StringBuilder();
    svg.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">");
    svg.AppendLine($"<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    svg.AppendLine($"<text x=\"{l}\" y=\"18\">TTFT per turn (ms, blue) and cache-manager KV bytes (orange): one session, {ttft.Count} turns</text>");
    svg.AppendLine($"<line x1=\"{l}\" y1=\"{h - bottom}\" x2=\"{w - r}\" y2=\"{h - bottom}\" stroke=\"black\"/><line x1=\"{l}\" y1=\"{top}\" x2=\"{l}\" y2=\"{h - bottom}\" stroke=\"black\"/><line x1=\"{w - r}\" y1=\"{top}\" x2=\"{w - r}\" y2=\"{h - bottom}\" stroke=\"black\"/>");
    for (int i = 0; i <= 4; i++)
    {
        double y = h - bottom - (h - top - bottom) * i / 4.0;
        svg.AppendLine(string.Create(CultureInfo.InvariantCulture, $"<text x=\"{l - 6}\" y=\"{y + 4:F0}\" text-anchor=\"end\" fill=\"#1f77b4\">{maxT * i / 4:F0}</text><text x=\"{w - r + 6}\" y=\"{y + 4:F0}\" fill=\"#ff7f0e\">{maxB * i / 4 / 1024:F0}K</text>"));
    }
    svg.AppendLine($"<text x=\"{l}\" y=\"{h - bottom + 16}\">1</text><text x=\"{w - r}\" y=\"{h - bottom + 16}\" text-anchor=\"end\">{ttft.Count}</text><text x=\"{(l + w - r) / 2}\" y=\"{h - 8}\" text-anchor=\"middle\">turn</text>");
    svg.AppendLine(Line(ttft, maxT, "#1f77b4"));
    svg.AppendLine(Line(bytes, maxB, "#ff7f0e"));
    svg.AppendLine("</svg>");
    return svg.ToString();
}
