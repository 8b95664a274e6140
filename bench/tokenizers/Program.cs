// Encode throughput of our SentencePiece BPE against python3-sentencepiece on the same text and machine.
// usage: dotnet run -c Release --project bench/tokenizers -- [MODEL] [TEXT] [REPEATS]
// Both sides encode the whole file as one string (no BOS), take the best of REPEATS runs, and must agree on the ids count.
using System.Diagnostics;
using System.Text;
using Cluster.Engine.Tokenizers;

var shared = Environment.GetEnvironmentVariable("LLMCLUSTER_SHARED") ?? Path.GetFullPath("../shared");
var model = args.Length > 0 ? args[0] : Path.Combine(shared, "models", "llama2-tokenizer", "tokenizer.model");
var textPath = args.Length > 1 ? args[1] : Path.Combine(shared, "corpus", "pg2701_moby_dick.txt");
var repeats = args.Length > 2 ? int.Parse(args[2]) : 5;

var text = File.ReadAllText(textPath);
var megabytes = Encoding.UTF8.GetByteCount(text) / 1e6;
var tokenizer = TokenizerLoader.Load(model);
tokenizer.Encode(text, addBos: false); // warm-up: JIT and tiering

var best = double.MaxValue;
var count = 0;
for (var i = 0; i < repeats; i++)
{
    var sw = Stopwatch.StartNew();
    count = tokenizer.Encode(text, addBos: false).Length;
    best = Math.Min(best, sw.Elapsed.TotalSeconds);
}

var script = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "tests", "reference", "sentencepiece", "encode.py");
var psi = new ProcessStartInfo("/usr/bin/python3", [Path.GetFullPath(script), model, "--bench", textPath, repeats.ToString()]) { RedirectStandardOutput = true };
using var python = Process.Start(psi)!;
var reply = python.StandardOutput.ReadToEnd().Split(' ');
python.WaitForExit();
var pyBest = double.Parse(reply[0], System.Globalization.CultureInfo.InvariantCulture);
var pyCount = int.Parse(reply[1]);

Console.WriteLine($"text: {textPath} ({megabytes:F3} MB UTF-8), model: {model}, best of {repeats}");
Console.WriteLine($"Cluster.Engine          : {best * 1000:F1} ms  {megabytes / best:F2} MB/s  {count} ids");
Console.WriteLine($"python3-sentencepiece   : {pyBest * 1000:F1} ms  {megabytes / pyBest:F2} MB/s  {pyCount} ids");
Console.WriteLine($"ratio (ours / reference): {pyBest / best:F2}x{(count == pyCount ? "" : "  (ids count DIFFERS)")}");
