using System.Text;
using System.Text.Json.Nodes;
using Cluster.Engine.Tokenizers;
using LlmCluster.V1;
using Microsoft.AspNetCore.Http;

namespace Cluster.Gateway.OpenAi;

/// <summary>
/// Turns the gateway's <see cref="GenerateResponse"/> stream (Started, Chunk..., Complete) into OpenAI's
/// responses: with "stream", one server-sent event per chunk (<c>text_completion</c> or
/// <c>chat.completion.chunk</c>), a last one with finish_reason, one with usage when
/// stream_options.include_usage asks, and <c>[DONE]</c>; without, one JSON object at the end.
/// Besides OpenAI's fields every response carries <c>session_id</c> (to continue the conversation),
/// and the last one <c>timings</c> and <c>kv</c> (the session's KV size after the turn).
/// With n &gt; 1 every choice carries its index (Chunk.index); the stream ends after the last choice's
/// Complete, and the whole response lists the choices in index order.
/// </summary>
internal sealed class OpenAiResponder(OpenAiRequest request, HttpResponse http, ITokenizer tokenizer, string model, Func<string, Task<JsonObject?>> kvSize)
{
    private readonly bool _chat = request.Endpoint == OpenAiEndpoint.ChatCompletions;
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private readonly SortedDictionary<int, ChoiceText> _choices = [];
    private readonly int _n = Math.Max(1, request.Generate.Sampling.N);
    private int _completed, _completionTokens;
    private string _sessionId = "", _turnId = "";

    /// <summary>What one choice has gathered for the whole (non-streamed) response.</summary>
    private sealed class ChoiceText
    {
        public StringBuilder Text { get; } = new();
        public JsonArray Logprobs { get; } = [];
        public JsonArray Tokens { get; } = [];
        public JsonArray TokenLogprobs { get; } = [];
        public JsonArray TopLogprobs { get; } = [];
        public JsonArray TextOffsets { get; } = [];
        public int TextOffset { get; set; }
        public string Finish { get; set; } = "stop";
    }

    private ChoiceText For(int index) => _choices.TryGetValue(index, out var c) ? c : _choices[index] = new ChoiceText();

    /// <summary>True once the HTTP response has started: a later failure can only be sent as an event.</summary>
    public bool Started { get; private set; }

    /// <summary>The whole completion (without "stream"), once the stream has completed.</summary>
    public JsonObject? Result { get; private set; }

    private string Id => (_chat ? "chatcmpl-" : "cmpl-") + _turnId.Replace('/', '-');

    public async Task WriteAsync(GenerateResponse r)
    {
        switch (r.ResponseCase)
        {
            case GenerateResponse.ResponseOneofCase.Started:
                _sessionId = r.Started.SessionId;
                _turnId = r.Started.TurnId.Length > 0 ? r.Started.TurnId : r.Started.SessionId;
                if (!request.Stream) break;
                await OpenAiJson.StartEventsAsync(http);
                Started = true;
                if (_chat)
                    for (int i = 0; i < _n; i++) await EventAsync(Choice(i, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, null));
                break;
            case GenerateResponse.ResponseOneofCase.Chunk:
                var choice = For(r.Chunk.Index);
                var logprobs = request.Logprobs ? Logprobs(r.Chunk.Logprobs, choice) : null;
                choice.Text.Append(r.Chunk.Text);
                if (request.Stream)
                    await EventAsync(Choice(r.Chunk.Index, _chat ? new JsonObject { ["content"] = r.Chunk.Text } : JsonValue.Create(r.Chunk.Text), logprobs, null));
                break;
            case GenerateResponse.ResponseOneofCase.Complete:
                await CompleteAsync(r.Complete);
                break;
        }
    }

    private async Task CompleteAsync(Complete complete)
    {
        string finish = complete.FinishReason switch
        {
            FinishReason.Length => "length",
            FinishReason.Abort => "abort",
            _ => "stop",
        };
        For(complete.Index).Finish = finish;
        _completionTokens += complete.Usage.CompletionTokens;
        bool last = ++_completed >= _n;
        var usage = new JsonObject
        {
            ["prompt_tokens"] = complete.Usage.PromptTokens,
            ["completion_tokens"] = _completionTokens,
            ["total_tokens"] = complete.Usage.PromptTokens + _completionTokens,
        };
        var timings = new JsonObject
        {
            ["ttft_ms"] = Math.Round(complete.Timings.TtftSeconds * 1000, 2),
            ["tpot_ms"] = Math.Round(complete.Timings.TpotSeconds * 1000, 2),
            ["e2e_ms"] = Math.Round(complete.Timings.E2ESeconds * 1000, 2),
        };
        var kv = await kvSize(_turnId);
        // The context, not max_tokens, ended the output: say so (OpenAI has no field for it; vLLM refuses
        // such requests, we serve what fits).
        int asked = request.Generate.Sampling.HasMaxTokens ? request.Generate.Sampling.MaxTokens : new Engine.Sampling.SamplingParameters().MaxTokens;
        string? warning = finish == "length" && complete.Usage.CompletionTokens < asked
            ? $"stopped after {complete.Usage.CompletionTokens} of max_tokens {asked}: the conversation reached the model's context; a bounded kv_policy such as sink_window(4,252) goes on"
            : null;
        if (request.Stream)
        {
            var end = Choice(complete.Index, _chat ? new JsonObject() : JsonValue.Create(""), null, finish);
            end["timings"] = timings;
            end["kv"] = kv;
            if (warning is not null) end["warning"] = warning;
            await EventAsync(end);
            if (!last) return;
            if (request.IncludeUsage)
            {
                var u = Envelope();
                u["choices"] = new JsonArray();
                u["usage"] = usage;
                await EventAsync(u);
            }
            await OpenAiJson.WriteEventAsync(http, "[DONE]");
            return;
        }
        if (!last) return;
        var choices = new JsonArray();
        foreach (var (index, c) in _choices)
        {
            var choice = new JsonObject { ["index"] = index };
            if (_chat) choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = c.Text.ToString() };
            else choice["text"] = c.Text.ToString();
            choice["logprobs"] = !request.Logprobs ? null : _chat ? new JsonObject { ["content"] = c.Logprobs }
                : new JsonObject { ["tokens"] = c.Tokens, ["token_logprobs"] = c.TokenLogprobs, ["top_logprobs"] = c.TopLogprobs, ["text_offset"] = c.TextOffsets };
            choice["finish_reason"] = c.Finish;
            choices.Add(choice);
        }
        var result = Envelope();
        result["choices"] = choices;
        result["usage"] = usage;
        result["timings"] = timings;
        result["kv"] = kv;
        if (warning is not null) result["warning"] = warning;
        Result = result;
    }

    /// <summary>Sends a failure after the stream has started (the status line has gone already), then ends it.</summary>
    public async Task FailAsync(OpenAiException e)
    {
        await OpenAiJson.WriteEventAsync(http, OpenAiJson.Text(OpenAiErrors.Body(e)));
        await OpenAiJson.WriteEventAsync(http, "[DONE]");
    }

    private JsonObject Envelope() => new()
    {
        ["id"] = Id,
        ["object"] = _chat ? (request.Stream ? "chat.completion.chunk" : "chat.completion") : "text_completion",
        ["created"] = _created,
        ["model"] = model,
        ["session_id"] = _sessionId,
    };

    private JsonObject Choice(int index, JsonNode? delta, JsonNode? logprobs, string? finish)
    {
        var choice = new JsonObject { ["index"] = index };
        choice[_chat ? "delta" : "text"] = delta;
        choice["logprobs"] = logprobs;
        choice["finish_reason"] = finish;
        var e = Envelope();
        e["choices"] = new JsonArray(choice);
        return e;
    }

    private Task EventAsync(JsonObject data) => OpenAiJson.WriteEventAsync(http, OpenAiJson.Text(data));

    /// <summary>A chunk's logprobs in the endpoint's shape; also gathered for the non-streamed response.</summary>
    private JsonObject Logprobs(IEnumerable<TokenLogprob> entries, ChoiceText choice)
    {
        if (_chat)
        {
            var content = new JsonArray();
            foreach (var l in entries)
            {
                var entry = Entry(l.TokenId, l.Logprob);
                entry["top_logprobs"] = new JsonArray(l.Top.Select(t => (JsonNode)Entry(t.TokenId, t.Logprob)).ToArray());
                content.Add(entry);
                choice.Logprobs.Add(entry.DeepClone());
            }
            return new JsonObject { ["content"] = content };
        }
        JsonArray tokens = [], tokenLogprobs = [], top = [], offsets = [];
        foreach (var l in entries)
        {
            string token = tokenizer.TokenText(l.TokenId);
            tokens.Add(token);
            tokenLogprobs.Add(l.Logprob);
            var alternatives = new JsonObject();
            foreach (var t in l.Top) alternatives[tokenizer.TokenText(t.TokenId)] = t.Logprob;
            top.Add(alternatives);
            offsets.Add(choice.TextOffset);
            choice.TextOffset += token.Length;
        }
        foreach (var (all, part) in new[] { (choice.Tokens, tokens), (choice.TokenLogprobs, tokenLogprobs), (choice.TopLogprobs, top), (choice.TextOffsets, offsets) })
            foreach (var n in part) all.Add(n?.DeepClone());
        return new JsonObject { ["tokens"] = tokens, ["token_logprobs"] = tokenLogprobs, ["top_logprobs"] = top, ["text_offset"] = offsets };
    }

    private JsonObject Entry(int id, float logprob)
    {
        string token = tokenizer.TokenText(id);
        return new JsonObject
        {
            ["token"] = token,
            ["logprob"] = logprob,
            ["bytes"] = new JsonArray(Encoding.UTF8.GetBytes(token).Select(b => (JsonNode)(int)b).ToArray()),
        };
    }
}
