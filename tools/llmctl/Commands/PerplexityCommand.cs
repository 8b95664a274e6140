using Cluster.Engine.Loaders;
using System.CommandLine;
using System.Text.Json;
using Cluster.Engine.Evaluation;
using LlmCtl.Streaming;

namespace LlmCtl.Commands;

/// <summary>`llmctl perplexity`: perplexity of a model on the first N tokens of a text file, over strided
/// windows, or with --policy streamed token by token through compressed caches (<see cref="StreamingPerplexityMode"/>).</summary>
internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "llama2.c .bin file or Hugging Face folder" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer file (default: found beside the model)" };
        var text = new Option<string>("--text") { Description = "text file to score", Required = true };
        var tokens = new Option<int>("--tokens") { Description = "score the first N tokens (BOS included)", DefaultValueFactory = _ => 1024 };
        var window = new Option<int?>("--window") { Description = "tokens per window (default: the model's context)" };
        var stride = new Option<int?>("--stride") { Description = "tokens between window starts (default: window/2)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var weights = ModelSource.WeightsOption();
        var device = new DeviceOptions();
        var cmd = new Command("perplexity", "perplexity over strided windows, each token scored once; with --policy, streamed token by token per KV-cache policy") { model, tokenizer, text, tokens, window, stride, json, threads, weights };
        device.AddTo(cmd);
        var streaming = StreamingPerplexityMode.AddOptions(cmd);
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            if (streaming.Requested(r)) return streaming.Run(r, r.GetValue(model), r.GetValue(tokenizer), r.GetValue(text)!, r.GetValue(tokens), r.GetValue(json), r.GetValue(threads), r.GetValue(weights));
            int n = r.GetValue(tokens);
            if (n < 2) throw new ArgumentException($"--tokens must be at least 2, got {n}");
            var path = ModelSource.ResolvePath(r.GetValue(model));
            using var m = ModelSource.Load(path, () => device.Create(r, r.GetValue(threads)), weights: r.GetValue(weights));
            var tok = ModelLoader.LoadTokenizer(path, m.Config, r.GetValue(tokenizer));
            var ids = TextPrefix.EncodeFirstTokens(tok, File.ReadAllText(r.GetValue(text)!), n);
            if (ids.Length < n) Console.Error.WriteLine($"note: the text holds only {ids.Length} tokens");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var progress = new ConsoleProgress("tokens scored", ids.Length - 1);
            var result = PerplexityEvaluator.Evaluate(m, ids, r.GetValue(window), r.GetValue(stride), progress.Report);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    perplexity = result.Perplexity,
                    nll_sum = result.NllSum,
                    tokens_scored = result.TokensScored,
                    window = result.Window,
                    stride = result.Stride,
                    ids,
                    seconds = sw.Elapsed.TotalSeconds,
                }));
            else
                Console.WriteLine($"perplexity {result.Perplexity:F4} over {result.TokensScored} tokens (window {result.Window}, stride {result.Stride}, {sw.Elapsed.TotalSeconds:F1} s)");
            return 0;
        }));
        return cmd;
    }
}
