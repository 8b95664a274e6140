using System.Text.Json;
using LlmCluster.V1;

namespace Cluster.Gateway.OpenAi;

/// <summary>Which OpenAI endpoint a request came through; they differ in prompt and response shapes only.</summary>
internal enum OpenAiEndpoint { Completions, ChatCompletions }

/// <summary>
/// An OpenAI request body read into the gateway's own <see cref="GenerateRequest"/>, plus what only the
/// HTTP response needs (streaming, usage in the stream, the logprobs shape). Types and shapes are checked
/// here (400 naming the parameter); values are checked by the generation path, as for gRPC, so both
/// front doors accept and refuse the same requests.
/// </summary>
internal sealed record OpenAiRequest(OpenAiEndpoint Endpoint, GenerateRequest Generate, bool Stream, bool IncludeUsage, bool Logprobs)
{
    /// <summary>Reads a request; <paramref name="modelId"/> is the one model served (another is 404).</summary>
    public static OpenAiRequest Read(OpenAiEndpoint endpoint, JsonFields f, string modelId, Func<string, KvPolicy> policy)
    {
        var model = f.String("model") ?? throw OpenAiException.BadRequest("'model' is required (GET /v1/models lists it)", "model");
        if (model != modelId) throw new OpenAiException(404, $"the model '{model}' does not exist; this server serves '{modelId}'", "model", "model_not_found");
        if (f.Bool("echo") == true) throw OpenAiException.BadRequest("echo is not supported", "echo");
        if (!string.IsNullOrEmpty(f.String("suffix"))) throw OpenAiException.BadRequest("suffix is not supported", "suffix");
        if (f.Get("tools") is { ValueKind: JsonValueKind.Array } tools && tools.GetArrayLength() > 0)
            throw OpenAiException.BadRequest("tools are not supported", "tools");
        f.String("user"); // accepted for compatibility (OpenAI uses it for abuse monitoring); type-checked only

        var request = new GenerateRequest { Sampling = Sampling(endpoint, f, out bool logprobs), SessionId = f.String("session_id") ?? "" };
        if (f.String("kv_policy") is { } spec) request.KvPolicy = policy(spec);
        if (endpoint == OpenAiEndpoint.Completions) SetPrompt(request, f);
        else request.Chat = Chat(f);
        bool stream = f.Bool("stream") ?? false;
        Outputs(request.Sampling, f, stream);
        bool usage = f.Object("stream_options")?.Bool("include_usage") ?? false;
        return new OpenAiRequest(endpoint, request, stream, usage, logprobs);
    }

    /// <summary>
    /// n, best_of and beam search. OpenAI's n and best_of; vLLM's beam search extension, spelled as its
    /// older API (use_beam_search, with best_of or n as the width) or as num_beams, plus length_penalty and
    /// early_stopping. Values are checked by the generation path (400 naming the field); what only HTTP
    /// can get wrong is checked here: best_of &gt; n cannot stream (OpenAI refuses it too), since which
    /// outputs are returned is known only when all have finished.
    /// </summary>
    private static void Outputs(SamplingParams s, JsonFields f, bool stream)
    {
        if (f.Int("n") is int n) s.N = n;
        int? bestOf = f.Int("best_of"), numBeams = f.Int("num_beams");
        bool beams = (f.Bool("use_beam_search") ?? false) || numBeams > 1;
        float? lengthPenalty = f.Number("length_penalty");
        bool? earlyStopping = f.Bool("early_stopping");
        if (beams)
        {
            s.BeamSearch = new BeamSearchParams { NumBeams = numBeams ?? bestOf ?? (s.HasN ? s.N : 1), EarlyStopping = earlyStopping ?? false };
            if (lengthPenalty is float lp) s.BeamSearch.LengthPenalty = lp;
            return;
        }
        if (bestOf is int b)
        {
            s.BestOf = b;
            if (stream && b > (s.HasN ? s.N : 1))
                throw OpenAiException.BadRequest($"best_of ({b}) > n cannot be streamed: the outputs returned are known only when all have finished; set stream to false", "best_of");
        }
    }

    private static SamplingParams Sampling(OpenAiEndpoint endpoint, JsonFields f, out bool logprobs)
    {
        var s = new SamplingParams();
        if ((f.Int("max_completion_tokens") ?? f.Int("max_tokens")) is int max) s.MaxTokens = max;
        if (f.Number("temperature") is float t) s.Temperature = t;
        if (f.Number("top_p") is float p) s.TopP = p;
        if (f.Int("top_k") is int k) s.TopK = k == -1 ? 0 : k; // vLLM spells "off" -1
        if (f.Number("min_p") is float minP) s.MinP = minP;
        if (f.Number("presence_penalty") is float pp) s.PresencePenalty = pp;
        if (f.Number("frequency_penalty") is float fp) s.FrequencyPenalty = fp;
        if (f.Number("repetition_penalty") is float rp) s.RepetitionPenalty = rp;
        if (f.Int("min_tokens") is int minTokens) s.MinTokens = minTokens;
        if (f.Bool("ignore_eos") is bool ignoreEos) s.IgnoreEos = ignoreEos;
        if (f.Long("seed") is long seed) s.Seed = unchecked((ulong)seed);
        s.Stop.Add(f.Strings("stop"));
        if (f.Object("logit_bias") is { } bias)
        {
            foreach (var entry in bias.Root.EnumerateObject())
            {
                if (!int.TryParse(entry.Name, out var id)) throw OpenAiException.BadRequest($"logit_bias keys must be token ids, got \"{entry.Name}\"", "logit_bias");
                if (entry.Value.ValueKind != JsonValueKind.Number) throw JsonFields.Wrong("logit_bias", "an object of numbers", entry.Value);
                s.LogitBias[id] = (float)entry.Value.GetDouble();
            }
        }
        // Completions: "logprobs": N (top N alternatives, 0 = only the chosen token's).
        // Chat: "logprobs": true with "top_logprobs": N.
        if (endpoint == OpenAiEndpoint.Completions)
        {
            logprobs = f.Int("logprobs") is int top;
            if (logprobs) { s.Logprobs = true; s.TopLogprobs = f.Int("logprobs")!.Value; }
        }
        else
        {
            logprobs = f.Bool("logprobs") ?? false;
            int? topN = f.Int("top_logprobs");
            if (topN is not null && !logprobs) throw OpenAiException.BadRequest("top_logprobs needs logprobs: true", "top_logprobs");
            if (logprobs) { s.Logprobs = true; s.TopLogprobs = topN ?? 0; }
        }
        return s;
    }

    private static void SetPrompt(GenerateRequest request, JsonFields f)
    {
        var prompt = f.Get("prompt") ?? throw OpenAiException.BadRequest("'prompt' is required", "prompt");
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                request.Text = prompt.GetString();
                return;
            case JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String:
                request.Text = prompt[0].GetString();
                return;
            case JsonValueKind.Array when prompt.GetArrayLength() > 0 && prompt.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _)):
                request.TokenIds = new TokenIds { Ids = { prompt.EnumerateArray().Select(e => e.GetInt32()) } };
                return;
            case JsonValueKind.Array when prompt.GetArrayLength() > 1:
                throw OpenAiException.BadRequest("one prompt per request: batches of prompts are not supported", "prompt");
            default:
                throw JsonFields.Wrong("prompt", "a string or an array of token ids", prompt);
        }
    }

    /// <summary>
    /// The chat messages. Continuing a session (session_id), the KV already holds the conversation up to
    /// its last reply: the messages after the last assistant message are the new turn, the earlier ones
    /// its history (a client may send the whole conversation, as OpenAI clients do, or only the new turn).
    /// </summary>
    private static ChatPrompt Chat(JsonFields f)
    {
        var messages = f.Get("messages") ?? throw OpenAiException.BadRequest("'messages' is required", "messages");
        if (messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw OpenAiException.BadRequest("'messages' must be a non-empty array of {role, content}", "messages");
        var all = messages.EnumerateArray().Select((m, i) => Message(m, i)).ToList();
        var chat = new ChatPrompt();
        if (f.String("session_id") is { Length: > 0 })
        {
            int split = all.FindLastIndex(m => m.Role == "assistant") + 1;
            chat.History.Add(all.Take(split));
            chat.Messages.Add(all.Skip(split));
            if (chat.Messages.Count == 0) throw OpenAiException.BadRequest("continuing a session needs a message after the last assistant message", "messages");
        }
        else chat.Messages.Add(all);
        return chat;
    }

    private static ChatMessage Message(JsonElement m, int i)
    {
        string param = $"messages[{i}]";
        if (m.ValueKind != JsonValueKind.Object) throw JsonFields.Wrong(param, "an object with role and content", m);
        var fields = new JsonFields(m);
        var role = fields.String("role") ?? throw OpenAiException.BadRequest($"{param}.role is required", param + ".role");
        if (role is not ("system" or "developer" or "user" or "assistant"))
            throw OpenAiException.BadRequest($"{param}.role must be system, developer, user or assistant, got \"{role}\"", param + ".role");
        string content = fields.Get("content") switch
        {
            null => "",
            { ValueKind: JsonValueKind.String } s => s.GetString()!,
            // Content parts: text parts are joined; other kinds (images, audio) are not served.
            { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                p.ValueKind == JsonValueKind.Object && p.TryGetProperty("type", out var t) && t.ValueEquals("text") && p.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                    ? text.GetString()
                    : throw OpenAiException.BadRequest($"{param}.content: only text parts are supported", param + ".content"))),
            { } other => throw JsonFields.Wrong(param + ".content", "a string or an array of text parts", other),
        };
        return new ChatMessage { Role = role == "developer" ? "system" : role, Content = content };
    }
}
