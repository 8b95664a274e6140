using Cluster.Engine.Loaders;
using System.CommandLine;
using System.Text.Json;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;

namespace LlmCtl.Commands;

/// <summary>`llmctl generate`: generation in this process with every sampling control, streaming
/// text as it is produced (one output) or printing each output when it ends (n &gt; 1, beam search).</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "llama2.c .bin file or Hugging Face folder (default: a generated random-weight model)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer file (default: found beside the model)" };
        var prompt = new Option<string>("--prompt") { Description = "prompt text (empty: start from BOS alone)", DefaultValueFactory = _ => "" };
        var json = new Option<bool>("--json") { Description = "print one JSON object with ids, text, finish reasons, logprobs and timings instead of streaming" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var device = new DeviceOptions();
        var endpoint = new Option<string?>("--endpoint") { Description = "generate through a running cluster's gateway (e.g. http://127.0.0.1:50051) instead of in this process" };
        var local = new Option<bool>("--local") { Description = "generate in this process (the default without --endpoint)" };
        var policy = new Option<string?>("--policy") { Description = "KV compression policy, e.g. sink_window(4,252) (default: dense locally, the gateway's default remotely)" };
        var qfilters = new Option<string?>("--qfilters") { Description = "q_filters safetensors file for the qfilters policy (local)" };
        var resume = new Option<string?>("--resume") { Description = "with --endpoint: resume this session (replays its tokens, then goes on live)" };
        var after = new Option<long>("--after") { Description = "with --resume: the last token index already received (-1: from the start)", DefaultValueFactory = _ => -1 };
        var repeat = new Option<int>("--repeat") { Description = "with --endpoint: send the request this many times, one after another, from this one process (a benchmark's client whose JIT has warmed up after the first)", DefaultValueFactory = _ => 1 };
        var weights = ModelSource.WeightsOption();
        var sampling = new SamplingOptions();
        var cmd = new Command("generate", "generate text from a prompt (greedy unless --temperature is set)") { model, tokenizer, prompt, json, threads, endpoint, local, policy, qfilters, resume, after, repeat, weights };
        device.AddTo(cmd);
        sampling.AddTo(cmd);
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            if (r.GetValue(endpoint) is { } url)
            {
                if (r.GetValue(local)) throw new ArgumentException("--local and --endpoint exclude each other");
                if (r.GetValue(model) is not null || r.GetValue(tokenizer) is not null)
                    throw new ArgumentException("--model and --tokenizer do not apply with --endpoint: the cluster serves the model it was started with (llmctl up --model ...)");
                if (r.GetValue(resume) is { } session) return RemoteGenerate.Resume(url, session, r.GetValue(after), r.GetValue(json));
                if (r.GetValue(repeat) < 1) throw new ArgumentException($"--repeat {r.GetValue(repeat)}: at least 1");
                return RemoteGenerate.Run(url, r.GetValue(prompt) ?? "", vocab => sampling.Read(r, vocab).WithResolvedSeed(), r.GetValue(policy), r.GetValue(json), r.GetValue(repeat));
            }
            if (r.GetValue(resume) is not null) throw new ArgumentException("--resume needs --endpoint (sessions live in a cluster)");
            if (r.GetValue(repeat) != 1) throw new ArgumentException("--repeat needs --endpoint");
            var path = ModelSource.ResolvePath(r.GetValue(model));
            using var m = ModelSource.Load(path, () => device.Create(r, r.GetValue(threads)), weights: r.GetValue(weights));
            var p = sampling.Read(r, m.Config.VocabSize).WithResolvedSeed();
            var tok = ModelLoader.LoadTokenizer(path, m.Config, r.GetValue(tokenizer));
            var promptText = r.GetValue(prompt) ?? "";
            var promptIds = tok.Encode(promptText, addBos: true);
            bool asJson = r.GetValue(json);
            bool stream = !asJson && p.N == 1 && !p.IsBeamSearch;

            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); }; // Ctrl-C ends with finish reason abort
            Console.CancelKeyPress += onCancel;
            var chunks = new List<GenerationChunk>();
            if (stream) Console.Write(promptText);
            var kvPolicy = r.GetValue(policy) is { } spec
                ? Cluster.Engine.Compression.KvPolicyRegistry.Parse(spec, new Cluster.Engine.Compression.PolicyOptions(
                    r.GetValue(qfilters) is { } f ? Cluster.Engine.Compression.Calibration.QFilters.Load(f) : null))
                : null;
            foreach (var chunk in new TextGenerator(m, tok).Generate(promptIds, p, cancel.Token, policy: kvPolicy))
            {
                chunks.Add(chunk);
                if (stream) Console.Write(chunk.Text);
            }
            Console.CancelKeyPress -= onCancel;
            var outputs = GenerationOutput.Collect(chunks);

            if (asJson) Console.WriteLine(JsonSerializer.Serialize(Json(outputs, promptIds, p, tok, m.Backend.Name)));
            else
            {
                if (stream) Console.WriteLine();
                else
                    foreach (var o in outputs)
                        Console.WriteLine($"--- output {o.Index} ({o.Finish.ToApiName()}{(o.Score is double s ? $", score {s:F4}" : "")}) ---\n{promptText}{o.Text}");
                var first = outputs[0];
                int generated = outputs.Sum(o => o.Ids.Count);
                var decode = outputs.Aggregate(TimeSpan.Zero, (t, o) => t + o.DecodeTime);
                double rate = generated > outputs.Count ? (generated - outputs.Count) / decode.TotalSeconds : 0;
                Console.Error.WriteLine($"[{promptIds.Length} prompt tokens, time to first token {first.TimeToFirstToken.TotalMilliseconds:F1} ms; " +
                    $"{generated} generated, decode {rate:F1} tokens/s; finish {string.Join(",", outputs.Select(o => o.Finish.ToApiName()))}; seed {p.Seed}; {m.Backend.Name}]");
            }
            return 0;
        }));
        return cmd;
    }

    private static object Json(IReadOnlyList<GenerationOutput> outputs, int[] promptIds, SamplingParameters p, ITokenizer tok, string backend)
    {
        var first = outputs[0];
        var decode = outputs.Aggregate(TimeSpan.Zero, (t, o) => t + o.DecodeTime);
        int decoded = outputs.Sum(o => Math.Max(0, o.Ids.Count - 1));
        object? Logprobs(GenerationOutput o) => o.Logprobs?.Select(l => new
        {
            id = l.Id,
            token = tok.TokenText(l.Id),
            logprob = l.Logprob,
            top_logprobs = l.Top.Select(t => new { id = t.Id, token = tok.TokenText(t.Id), logprob = t.Logprob }),
        });
        return new
        {
            prompt_ids = promptIds,
            seed = p.Seed,
            // The first output's fields at the top level, for the common n = 1 case.
            ids = first.Ids,
            text = first.Text,
            finish_reason = first.Finish.ToApiName(),
            logprobs = Logprobs(first),
            choices = outputs.Select(o => new
            {
                index = o.Index,
                ids = o.Ids,
                text = o.Text,
                finish_reason = o.Finish.ToApiName(),
                logprobs = Logprobs(o),
                score = o.Score,
            }),
            prefill_seconds = first.TimeToFirstToken.TotalSeconds,
            decode_seconds = decode.TotalSeconds,
            decode_tokens_per_second = decoded > 0 ? decoded / decode.TotalSeconds : 0,
            backend,
        };
    }
}
