// Encode throughput of our SentencePiece BPE against python3-sentencepiece on the same text and machine.
// usage: dotnet run -c Release --project bench/tokenizers -- [MODEL] [TEXT] [REPEATS]
// Two cases, each best of REPEATS after a warm-up: the whole file as one string, and its lines (split on
// '\n') encoded one call each (python: one batched call over the list). No BOS. The ids counts must agree.
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Cluster.Engine.Tokenizers;

var shared = Environment.GetEnvironmentVariable("LLMCLUSTER_SHARED") ?? Path.GetFullPath("../shared");
var model = args.Length > 0 ? args[0] : Path.Combine(shared, "models", "llama2-tokenizer", "tokenizer.model");
var textPath = args.Length > 1 ? args[1] : Path.Combine(shared, "corpus", "pg2701_moby_dick.txt");
var repeats = args.Length > 2 ? int.Parse(args[2]) : 5;

var text = File.ReadAllText(textPath);
var lines = text.Split('\n');
var megabytes = Encoding.UTF8.GetByteCount(text) / 1e6;
var tokenizer = TokenizerLoader.Load(model);

var ours = new[]
{
    Measure(() => tokenizer.Encode(text, addBos: false).Length),
    Measure(() => lines.Sum(l => tokenizer.Encode(l, addBos: false).Length)),
    MeasureCold(),
};

var script = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "tests", "reference", "sentencepiece", "encode.py");
var psi = new ProcessStartInfo("/usr/bin/python3", [Path.GetFullPath(script), model, "--bench", textPath, repeats.ToString()]) { RedirectStandardOutput = true };
using var python = Process.Start(psi)!;
var reference = python.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries)
    .Select(l => l.Split(' ')).Select(p => (Seconds: double.Parse(p[0], CultureInfo.InvariantCulture), Ids: int.Parse(p[1]))).ToArray();
python.WaitForExit();

Console.WriteLine($"text: {textPath} ({megabytes:F3} MB UTF-8, {lines.Length} lines), model: {model}, best of {repeats}, {Environment.ProcessorCount} cores");
Console.WriteLine("| case | Cluster.Engine | python3-sentencepiece | ratio |");
Console.WriteLine("|---|---|---|---|");
string[] names = ["whole file, one string", "line by line", "whole file, empty word cache"];
for (var i = 0; i < 3; i++)
{
    var (s, n) = ours[i];
    var (ps, pn) = reference[i % 2 == 0 ? 0 : 1];
    Console.WriteLine($"| {names[i]} | {megabytes / s:F2} MB/s ({s * 1000:F0} ms, {n} ids) | {megabytes / ps:F2} MB/s ({ps * 1000:F0} ms, {pn} ids) | **{ps / s:F2}x**{(n == pn ? "" : " ids count DIFFERS")} |");
}

(double Seconds, int Ids) Measure(Func<int> encode)
{
    encode(); // warm-up: JIT tiering and the word cache, as a long-running server has them
    var best = double.MaxValue;
    var ids = 0;
    for (var i = 0; i < repeats; i++)
    {
        var sw = Stopwatch.StartNew();
        ids = encode();
        best = Math.Min(best, sw.Elapsed.TotalSeconds);
    }
    return (best, ids);
}

// The word cache fills during a warm-up; sentencepiece has none, so also time the first pass of a freshly
// loaded tokenizer (code already jitted by the runs above), a new one for each repeat.
(double Seconds, int Ids) MeasureCold()
{
    var best = double.MaxValue;
    var ids = 0;
    for (var i = 0; i < repeats; i++)
    {
        var fresh = TokenizerLoader.Load(model);
        var sw = Stopwatch.StartNew();
        ids = fresh.Encode(text, addBos: false).Length;
        best = Math.Min(best, sw.Elapsed.TotalSeconds);
    }
    return (best, ids);
}
