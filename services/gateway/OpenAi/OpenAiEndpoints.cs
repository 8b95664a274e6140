using System.Text.Json;
using System.Text.Json.Nodes;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using Grpc.Core;
using LlmCluster.V1;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Cluster.Gateway.OpenAi;

/// <summary>
/// The OpenAI-compatible HTTP API on the gateway's HTTP/1.1 port (docs/OPENAI.md): GET /v1/models,
/// POST /v1/completions and POST /v1/chat/completions. One code path, two front doors: each request
/// becomes the gateway's own <see cref="GenerateRequest"/> and runs through <see cref="GenerateCall"/>
/// exactly as a gRPC Generate call does, so the same request and seed give the same tokens.
/// </summary>
internal sealed class OpenAiEndpoints(GatewayService gateway)
{
    public static void Map(IEndpointRouteBuilder endpoints, GatewayService gateway)
    {
        var api = new OpenAiEndpoints(gateway);
        endpoints.MapGet("/v1/models", api.ModelsAsync);
        endpoints.MapGet("/v1/models/{id}", (HttpContext http, string id) => api.ModelAsync(http, id));
        endpoints.MapPost("/v1/completions", http => api.GenerateAsync(http, OpenAiEndpoint.Completions));
        endpoints.MapPost("/v1/chat/completions", http => api.GenerateAsync(http, OpenAiEndpoint.ChatCompletions));
        Playground.Map(endpoints);
    }

    private JsonObject Model() => new()
    {
        ["id"] = gateway.ModelId,
        ["object"] = "model",
        ["created"] = gateway.Started.ToUnixTimeSeconds(),
        ["owned_by"] = "llm-cluster",
        ["max_model_len"] = gateway.Host.Config.MaxPositions,
        ["kv_policies"] = new JsonArray(Engine.Compression.KvPolicyRegistry.Names.Select(n => (JsonNode)n).ToArray()),
        ["default_kv_policy"] = gateway.Options.Policy,
        ["chat_template"] = (gateway.ChatTemplate ?? gateway.Host.Tokenizer.ChatTemplate) is not null,
    };

    private Task ModelsAsync(HttpContext http) =>
        OpenAiJson.WriteAsync(http.Response, new JsonObject { ["object"] = "list", ["data"] = new JsonArray(Model()) });

    private Task ModelAsync(HttpContext http, string id) => id == gateway.ModelId
        ? OpenAiJson.WriteAsync(http.Response, Model())
        : OpenAiErrors.WriteAsync(http.Response, new OpenAiException(404, $"the model '{id}' does not exist; this server serves '{gateway.ModelId}'", "model", "model_not_found"));

    private async Task GenerateAsync(HttpContext http, OpenAiEndpoint endpoint)
    {
        OpenAiResponder? responder = null;
        try
        {
            using var body = await ReadAsync(http);
            var request = OpenAiRequest.Read(endpoint, JsonFields.Parse(body), gateway.ModelId, Policy);
            responder = new OpenAiResponder(request, http.Response, gateway.Host.Tokenizer, gateway.ModelId, KvSizeAsync);
            var context = new HttpCallContext(http, http.Request.Path);
            try
            {
                await new GenerateCall(gateway, new ResponseSink<GenerateResponse>(responder.WriteAsync), context).RunAsync(request.Generate);
            }
            catch (Exception e) when (e is not OpenAiException)
            {
                var (status, unexpected) = StatusMapping.ToStatus(e, context);
                if (unexpected) gateway.Logger.LogError(e, "{Path} failed", http.Request.Path.Value);
                throw OpenAiErrors.FromStatus(status);
            }
            // A client that went away gets nothing more (the session stays resumable, as over gRPC).
            if (!request.Stream && responder.Result is { } result) await OpenAiJson.WriteAsync(http.Response, result);
        }
        catch (OpenAiException e) when (!http.RequestAborted.IsCancellationRequested)
        {
            if (responder?.Started == true) await responder.FailAsync(e);
            else await OpenAiErrors.WriteAsync(http.Response, e);
        }
        catch (OpenAiException) when (http.RequestAborted.IsCancellationRequested)
        {
            // The client went away (e.g. in the middle of its body): there is no one to answer, and nothing to log.
        }
    }

    private static async Task<JsonDocument> ReadAsync(HttpContext http)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(http.Request.Body, cancellationToken: http.RequestAborted);
        }
        catch (JsonException e)
        {
            throw OpenAiException.BadRequest($"the request body is not valid JSON: {e.Message}");
        }
        // A body Kestrel cannot read (bad chunked framing, ...) is the client's: its own status (400, 413)
        // where Kestrel says one, else 400. Kestrel reports an oversized chunk size as a plain IOException
        // over an OverflowException, which unhandled was a 500 (found by `llmctl bench fuzz`).
        catch (IOException e) when (!http.RequestAborted.IsCancellationRequested)
        {
            int status = e is BadHttpRequestException bad ? bad.StatusCode : 400;
            throw new OpenAiException(status, $"the request body could not be read: {e.Message}");
        }
        try
        {
            CheckStrings(document.RootElement);
        }
        catch (InvalidOperationException e)
        {
            document.Dispose();
            throw OpenAiException.BadRequest($"the request body has a string that is not valid text: {e.Message}");
        }
        return document;
    }

    /// <summary>
    /// Decodes every string and property name once: JsonDocument accepts bytes that are not UTF-8 (and
    /// escaped lone surrogates such as "\ud800") inside strings and only throws when one is read, which
    /// would otherwise surface deep in the request's reading as a 500 (found by `llmctl bench fuzz`).
    /// </summary>
    private static void CheckStrings(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject()) { _ = p.Name; CheckStrings(p.Value); }
                break;
            case JsonValueKind.Array:
                foreach (var item in e.EnumerateArray()) CheckStrings(item);
                break;
            case JsonValueKind.String:
                _ = e.GetString();
                break;
        }
    }

    /// <summary>A kv_policy spec ("sink_window(4,60)") checked against the registry; 400 naming it otherwise.</summary>
    private KvPolicy Policy(string spec)
    {
        try
        {
            PolicyMapping.Parse(spec, gateway.Host.Policies);
        }
        catch (InvalidRequestException e)
        {
            throw OpenAiException.BadRequest(e.Message, "kv_policy");
        }
        var wire = PolicyMapping.ToWire(spec);
        return wire.PolicyCase != KvPolicy.PolicyOneofCase.None ? wire
            : throw OpenAiException.BadRequest($"kv_policy '{spec}' cannot be sent to the workers; use e.g. dense, window(256), sink_window(4,252), qfilters(256,32)", "kv_policy");
    }

    /// <summary>
    /// The conversation's KV after a turn (the playground shows it): positions seen so far, the slots the
    /// session's policy keeps of them, and their size at fp32 keys and values.
    /// </summary>
    private async Task<JsonObject?> KvSizeAsync(string turnId)
    {
        var info = await gateway.Sessions.GetAsync(turnId, CancellationToken.None);
        if (info is null || SessionRecord.From(info) is not { } turn) return null;
        int seen = turn.History + turn.Prompt.Length + info.GeneratedTokens - 1; // the last token is fed next turn
        int? budget = PolicyMapping.Parse(turn.Policy, gateway.Host.Policies).Budget;
        int kept = budget is int b ? Math.Min(b, seen) : seen;
        var c = gateway.Host.Config;
        long bytes = (long)kept * c.Layers * c.KvHeads * c.HeadDim * 2 * sizeof(float);
        return new JsonObject { ["policy"] = turn.Policy, ["tokens_seen"] = seen, ["tokens"] = kept, ["bytes"] = bytes };
    }
}
