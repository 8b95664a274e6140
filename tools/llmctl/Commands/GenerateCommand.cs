using System.CommandLine;
using System.Text.Json;
using Cluster.Engine.Generation;
using Cluster.Engine.Tokenizers;

namespace LlmCtl.Commands;

/// <summary>`llmctl generate`: greedy generation in this process, streaming text as it is produced.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "llama2.c .bin file or Hugging Face folder (default: a generated random-weight model)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer file (default: found beside the model)" };
        var prompt = new Option<string>("--prompt") { Description = "prompt text (empty: start from BOS alone)", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "tokens to generate", DefaultValueFactory = _ => 256 };
        var json = new Option<bool>("--json") { Description = "print one JSON object with ids, text and timings instead of streaming" };
        var threads = new Option<int?>("--threads") { Description = "CPU threads (default: all cores)" };
        var cmd = new Command("generate", "generate text greedily from a prompt") { model, tokenizer, prompt, maxTokens, json, threads };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int max = r.GetValue(maxTokens);
            if (max < 1) throw new ArgumentException($"--max-tokens must be at least 1, got {max}");
            var path = ModelSource.ResolvePath(r.GetValue(model));
            using var m = ModelSource.Load(path, r.GetValue(threads));
            var tok = ModelSource.LoadTokenizer(path, r.GetValue(tokenizer), m.Config);
            var promptIds = tok.Encode(r.GetValue(prompt) ?? "", addBos: true);
            bool asJson = r.GetValue(json);

            var decoder = new IncrementalDecoder(tok);
            var ids = new List<int>();
            var text = new System.Text.StringBuilder();
            foreach (var id in promptIds) decoder.Push(id); // so the first generated piece is decoded in context
            if (!asJson) Console.Write(r.GetValue(prompt));
            TimeSpan prefill = default, decode = default;
            foreach (var t in GreedyGenerator.Generate(m, promptIds, max))
            {
                if (ids.Count == 0) prefill = t.Elapsed; else decode += t.Elapsed;
                ids.Add(t.Id);
                var piece = decoder.Push(t.Id);
                text.Append(piece);
                if (!asJson) Console.Write(piece);
            }
            text.Append(decoder.Flush());
            double decodeRate = ids.Count > 1 ? (ids.Count - 1) / decode.TotalSeconds : 0;
            if (asJson)
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    prompt_ids = promptIds,
                    ids,
                    text = text.ToString(),
                    prefill_seconds = prefill.TotalSeconds,
                    decode_seconds = decode.TotalSeconds,
                    decode_tokens_per_second = decodeRate,
                    backend = m.Backend.Name,
                }));
            }
            else
            {
                Console.WriteLine();
                Console.Error.WriteLine($"[{promptIds.Length} prompt tokens, time to first token {prefill.TotalMilliseconds:F1} ms; {ids.Count} generated, decode {decodeRate:F1} tokens/s; {m.Backend.Name}]");
            }
            return 0;
        }));
        return cmd;
    }
}
