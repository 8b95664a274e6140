using Grpc.Net.Client;
using Cluster.Serving.Routing;
using System.CommandLine;
using System.Text.Json;
using Grpc.Core;
using LlmCtl.Load;
using Spectre.Console;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl bench load --endpoint URL --concurrency C --requests N`: drives a cluster's gateway and
/// reports client-side TTFT/TPOT/ITL/e2e percentiles, throughput and goodput under SLOs. The
/// measuring is <see cref="LoadGenerator"/>; this is its command line and printing.
/// </summary>
internal static class BenchLoadCommand
{
    public static Command Create()
    {
        var endpoint = new Option<string>("--endpoint") { Description = "gateway gRPC address", DefaultValueFactory = _ => "http://127.0.0.1:50051" };
        var concurrency = new Option<int>("--concurrency") { Description = "requests in flight at once", DefaultValueFactory = _ => 8 };
        var requests = new Option<int>("--requests") { Description = "requests to send in all", DefaultValueFactory = _ => 64 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "random prompt tokens per request", DefaultValueFactory = _ => 32 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens generated per request (EOS ignored)", DefaultValueFactory = _ => 64 };
        var ttftSlo = new Option<double>("--ttft-slo-ms") { Description = "TTFT objective for goodput", DefaultValueFactory = _ => 1000 };
        var tpotSlo = new Option<double>("--tpot-slo-ms") { Description = "TPOT objective for goodput", DefaultValueFactory = _ => 100 };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var cmd = new Command("load", "load-test a cluster: TTFT/TPOT/ITL/e2e percentiles, throughput, goodput under SLOs")
        {
            endpoint, concurrency, requests, promptTokens, maxTokens, ttftSlo, tpotSlo, json,
        };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            var options = new LoadOptions(r.GetValue(concurrency), r.GetValue(requests), r.GetValue(promptTokens), r.GetValue(maxTokens),
                r.GetValue(ttftSlo) / 1e3, r.GetValue(tpotSlo) / 1e3);
            using var channel = GrpcChannels.Create(r.GetValue(endpoint)!);
            var report = Run(channel, options);
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(ToJson(report), new JsonSerializerOptions { WriteIndented = true }));
            else Print(report);
            return report.Failed == 0 ? 0 : 1;
        }));
        return cmd;
    }

    /// <summary>A live bar on a terminal; on a pipe or file, ConsoleProgress's few plain lines.</summary>
    private static LoadReport Run(GrpcChannel channel, LoadOptions options)
    {
        if (Console.IsErrorRedirected)
        {
            var plain = new ConsoleProgress("requests", options.Requests);
            return LoadGenerator.RunAsync(channel, options, done => { lock (plain) plain.Report(done); }).GetAwaiter().GetResult();
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask($"{options.Requests} requests, {options.Concurrency} at once", maxValue: options.Requests);
                return await LoadGenerator.RunAsync(channel, options, done => task.Value = done);
            }).GetAwaiter().GetResult();
    }

    private static void Print(LoadReport r)
    {
        static string Ms(double s) => $"{s * 1e3,9:F1}";
        Console.WriteLine($"{r.Succeeded} ok, {r.Failed} failed in {r.WallSeconds:F2} s (concurrency {r.Options.Concurrency}, prompt {r.Options.PromptTokens}, max tokens {r.Options.MaxTokens})");
        Console.WriteLine($"{"ms",-6}{"p50",9}{"p90",9}{"p99",9}  samples");
        foreach (var (name, p) in new[] { ("TTFT", r.Ttft), ("TPOT", r.Tpot), ("ITL", r.Itl), ("e2e", r.E2e) })
            Console.WriteLine($"{name,-6}{Ms(p.P50)}{Ms(p.P90)}{Ms(p.P99)}  {p.Count}");
        Console.WriteLine($"throughput: {r.OutputTokensPerSecond:F1} output tokens/s, {r.RequestsPerSecond:F2} requests/s");
        Console.WriteLine($"goodput (TTFT <= {r.Options.TtftSloSeconds * 1e3:F0} ms and TPOT <= {r.Options.TpotSloSeconds * 1e3:F0} ms): {r.GoodputShare:P1} of requests, {r.GoodputRequestsPerSecond:F2} requests/s");
    }

    private static object ToJson(LoadReport r)
    {
        static object P(Percentiles p) => new { samples = p.Count, p50_ms = p.P50 * 1e3, p90_ms = p.P90 * 1e3, p99_ms = p.P99 * 1e3 };
        return new
        {
            concurrency = r.Options.Concurrency,
            requests = r.Options.Requests,
            prompt_tokens = r.Options.PromptTokens,
            max_tokens = r.Options.MaxTokens,
            succeeded = r.Succeeded,
            failed = r.Failed,
            wall_seconds = r.WallSeconds,
            ttft = P(r.Ttft),
            tpot = P(r.Tpot),
            itl = P(r.Itl),
            e2e = P(r.E2e),
            output_tokens_per_second = r.OutputTokensPerSecond,
            requests_per_second = r.RequestsPerSecond,
            ttft_slo_ms = r.Options.TtftSloSeconds * 1e3,
            tpot_slo_ms = r.Options.TpotSloSeconds * 1e3,
            goodput_share = r.GoodputShare,
            goodput_requests_per_second = r.GoodputRequestsPerSecond,
        };
    }
}
