using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Cluster.Engine.Loaders;
using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>A cluster on stories260K whose gateway has a plain chat template (the model has none).</summary>
public sealed class OpenAiFixture : IAsyncLifetime
{
    /// <summary>Each message's content on its own line after BOS: enough for chat on a story model.</summary>
    public const string PlainTemplate = "{{ bos_token }}{% for message in messages %}{{ message['content'] + '\\n' }}{% endfor %}";

    public string ModelPath => SharedData.Path_("models", "stories260K", "stories260K.bin");
    public TestCluster Cluster { get; private set; } = null!;
    public ITokenizer Tokenizer { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (SharedData.Root is null) return;
        using (var model = ModelLoader.Load(ModelPath)) Tokenizer = ModelLoader.LoadTokenizer(ModelPath, model.Config);
        Cluster = await TestCluster.StartAsync(ModelPath, gatewayOptions: ["--chat-template", PlainTemplate]);
        await Cluster.WaitUntilWorkersUpAsync();
        Http = new HttpClient { BaseAddress = Cluster.OpenAiBase, Timeout = TimeSpan.FromSeconds(60) };
    }

    public async Task DisposeAsync()
    {
        Http?.Dispose();
        if (Cluster is not null) await Cluster.DisposeAsync();
    }
}

/// <summary>
/// The OpenAI-compatible HTTP API (docs/OPENAI.md): driven by the official OpenAI client for Node, and by
/// raw HTTP for what that client cannot send (malformed JSON). Its tokens must equal the gRPC stream's.
/// </summary>
public class OpenAiApiTests(OpenAiFixture f) : IClassFixture<OpenAiFixture>
{
    private const string Prompt = "Once upon a time, there was a little dog";
    private const int Seed = 7, MaxTokens = 24;

    [SkippableFact]
    public async Task Official_openai_client_lists_completes_chats_and_streams_the_grpc_tokens()
    {
        Skip.If(SharedData.Root is null, SharedData.SkipReason);
        NodePeers.Require("openai");
        var config = JsonSerializer.Serialize(new { baseURL = f.Cluster.OpenAiBase.ToString().TrimEnd('/'), prompt = Prompt, seed = Seed, maxTokens = MaxTokens });
        var stdout = await Task.Run(() => NodePeers.Run("client.js", config, TimeSpan.FromMinutes(3)));
        using var doc = JsonDocument.Parse(stdout);
        var r = doc.RootElement;

        Assert.Equal(["stories260K.bin"], r.GetProperty("models").EnumerateArray().Select(e => e.GetString()));

        // The same request over gRPC: same seed, same sampling, same tokens.
        var grpc = await f.Cluster.GenerateAsync(new GenerateRequest
        {
            Text = Prompt,
            Sampling = new SamplingParams { Seed = Seed, Temperature = 0.8f, MaxTokens = MaxTokens },
        });
        var stream = r.GetProperty("stream");
        Assert.Equal(grpc.Ids.Select(f.Tokenizer.TokenText), stream.GetProperty("tokens").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(grpc.Text, string.Concat(stream.GetProperty("texts").EnumerateArray().Select(e => e.GetString())));
        Assert.True(stream.GetProperty("texts").GetArrayLength() > 1, "the completion arrived in one piece, not streamed");
        Assert.Equal(grpc.Ids.Count, stream.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(grpc.Finish == FinishReason.Length ? "length" : "stop", stream.GetProperty("finish_reason").GetString());
        var completion = r.GetProperty("completion");
        Assert.Equal(grpc.Text, completion.GetProperty("text").GetString());
        Assert.Equal(grpc.Ids.Count, completion.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var chat = r.GetProperty("chat");
        Assert.Equal("assistant", chat.GetProperty("role").GetString());
        Assert.False(string.IsNullOrEmpty(chat.GetProperty("content").GetString()));
        Assert.Equal(chat.GetProperty("content").GetString(), r.GetProperty("chatStream").GetProperty("content").GetString());
        Assert.True(r.GetProperty("chatStream").GetProperty("chunks").GetInt32() > 2);

        // n = 2 through the official client: each choice is the gRPC output of its index.
        var two = new SortedDictionary<int, string>();
        using (var call = new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).Generate(new GenerateRequest
        {
            Text = Prompt,
            Sampling = new SamplingParams { Seed = Seed, Temperature = 0.8f, MaxTokens = MaxTokens, N = 2 },
        }))
        {
            await foreach (var g in call.ResponseStream.ReadAllAsync())
                if (g.ResponseCase == GenerateResponse.ResponseOneofCase.Chunk) two[g.Chunk.Index] = two.GetValueOrDefault(g.Chunk.Index, "") + g.Chunk.Text;
        }
        Assert.Equal(two.Select(e => (e.Key, e.Value)), r.GetProperty("nTwo").EnumerateArray().Select(c => (c.GetProperty("index").GetInt32(), c.GetProperty("text").GetString()!)));
        Assert.NotEqual(two[0], two[1]);

        var errors = r.GetProperty("errors");
        void Refused(string name, int status, string type, string? param)
        {
            var e = errors.GetProperty(name);
            Assert.True(status == e.GetProperty("status").GetInt32(), $"{name}: {e}");
            Assert.Equal(type, e.GetProperty("type").GetString());
            Assert.Equal(param, e.GetProperty("param").GetString());
            Assert.False(string.IsNullOrEmpty(e.GetProperty("message").GetString()));
        }
        Refused("unknownModel", 404, "not_found_error", "model");
        Refused("badType", 400, "invalid_request_error", "temperature");
        Refused("outOfRange", 400, "invalid_request_error", "top_p");
        Refused("negativeMax", 400, "invalid_request_error", "max_tokens");
        Refused("nZero", 400, "invalid_request_error", "n");
        Refused("bestOfStreamed", 400, "invalid_request_error", "best_of");
        Refused("badPolicy", 400, "invalid_request_error", "kv_policy");
        Assert.Equal(grpc.Text, r.GetProperty("afterErrors").GetString());
    }

    [SharedDataTheory]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": ", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object")]
    [InlineData("{\"prompt\": \"Hi\"}", "'model' is required")]
    [InlineData("{\"model\": \"stories260K.bin\"}", "'prompt' is required")]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": [\"a\", \"b\"]}", "one prompt per request")]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": \"Hi\", \"stop\": 3}", "'stop' must be a string or an array of strings")]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": \"Hi\", \"logit_bias\": {\"x\": 1}}", "logit_bias keys must be token ids")]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": \"Hi\", \"session_id\": \"no-such-session\"}", "no-such-session")]
    [InlineData("{\"model\": \"stories260K.bin\", \"prompt\": \"a\\ud800b\"}", "not valid text")] // an escaped lone surrogate
    public async Task Malformed_requests_get_openai_shaped_4xx_and_the_server_keeps_serving(string body, string expected)
    {
        using var response = await f.Http.PostAsync("completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode is >= 400 and < 500, $"{response.StatusCode}: {text}");
        using var error = JsonDocument.Parse(text);
        var e = error.RootElement.GetProperty("error");
        Assert.Contains(expected, e.GetProperty("message").GetString());
        Assert.False(string.IsNullOrEmpty(e.GetProperty("type").GetString()));
        Assert.True(e.TryGetProperty("param", out _) && e.TryGetProperty("code", out _));

        using var ok = await f.Http.PostAsJsonAsync("completions", new { model = "stories260K.bin", prompt = "Hi", max_tokens = 2 });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    /// <summary>Two bodies `llmctl bench fuzz` found answered with a 500: bytes that are not UTF-8 inside a JSON
    /// string (JsonDocument accepts them and throws only when the string is read), and a chunk size that
    /// overflows (Kestrel throws a plain IOException, not its BadHttpRequestException).</summary>
    [SharedDataFact]
    public async Task Bodies_that_are_not_text_or_not_readable_get_400()
    {
        using var content = new ByteArrayContent([.. "{\"model\": \"stories260K.bin\", \"prompt\": \"ab"u8, 0xED, 0xA0, 0x80, .. "cd\"}"u8]);
        content.Headers.ContentType = new("application/json");
        using var response = await f.Http.PostAsync("completions", content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest && text.Contains("not valid text"), $"{response.StatusCode}: {text}");

        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync("127.0.0.1", f.Cluster.Gateway.HttpEndPoint.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nFFFFFFFFFFFFFFFF\r\nab\r\n"));
        var buffer = new byte[4096];
        int n = await socket.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(30));
        var head = Encoding.ASCII.GetString(buffer, 0, n);
        Assert.StartsWith("HTTP/1.1 400", head);
    }

    [SharedDataFact]
    public async Task Max_tokens_cut_by_the_context_comes_with_a_warning()
    {
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 42));
        using var response = await f.Http.PostAsJsonAsync("completions", new { model = "stories260K.bin", prompt, max_tokens = 200, ignore_eos = true });
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("length", body.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.True(body.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32() < 200);
        Assert.Contains("of max_tokens 200: the conversation reached the model's context", body.RootElement.GetProperty("warning").GetString());

        using var fits = await f.Http.PostAsJsonAsync("completions", new { model = "stories260K.bin", prompt = "Hi", max_tokens = 3, ignore_eos = true });
        using var fitsBody = JsonDocument.Parse(await fits.Content.ReadAsStringAsync());
        Assert.False(fitsBody.RootElement.TryGetProperty("warning", out _));
    }

    [SharedDataFact]
    public async Task Chat_continues_a_session_on_its_stored_kv_and_reports_its_size()
    {
        using var first = await f.Http.PostAsJsonAsync("chat/completions", new
        {
            model = "stories260K.bin", max_tokens = 8, seed = 3, kv_policy = "sink_window(4,28)",
            messages = new[] { new { role = "user", content = "Lily had a red ball." } },
        });
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        using var one = JsonDocument.Parse(await first.Content.ReadAsStringAsync());
        var session = one.RootElement.GetProperty("session_id").GetString()!;
        var kv = one.RootElement.GetProperty("kv");
        Assert.Equal("sink_window(4,28)", kv.GetProperty("policy").GetString());
        int prompt = one.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        int completion = one.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        Assert.Equal(prompt + completion - 1, kv.GetProperty("tokens_seen").GetInt32());
        Assert.Equal(Math.Min(32, prompt + completion - 1), kv.GetProperty("tokens").GetInt32());

        // The next turn sends the whole conversation, as OpenAI clients do: only the new message is prefilled.
        var reply = one.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        using var second = await f.Http.PostAsJsonAsync("chat/completions", new
        {
            model = "stories260K.bin", max_tokens = 8, seed = 3, session_id = session,
            messages = new[] { new { role = "user", content = "Lily had a red ball." }, new { role = "assistant", content = reply }, new { role = "user", content = "She threw it." } },
        });
        var secondText = await second.Content.ReadAsStringAsync();
        Assert.True(second.StatusCode == HttpStatusCode.OK, secondText);
        using var two = JsonDocument.Parse(secondText);
        Assert.Equal(session, two.RootElement.GetProperty("session_id").GetString());
        int newPrompt = two.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        Assert.Equal(f.Tokenizer.Encode("She threw it.\n", addBos: false).Length, newPrompt);
        Assert.True(two.RootElement.GetProperty("kv").GetProperty("tokens_seen").GetInt32() > prompt + completion);
        Assert.Equal(32, two.RootElement.GetProperty("kv").GetProperty("tokens").GetInt32());
    }
}
