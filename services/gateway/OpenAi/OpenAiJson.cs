using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;

namespace Cluster.Gateway.OpenAi;

/// <summary>JSON and server-sent events out, built from <see cref="JsonNode"/>s (no reflection serializer).</summary>
internal static class OpenAiJson
{
    private static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string Text(JsonNode node) => node.ToJsonString(Compact);

    public static async Task WriteAsync(HttpResponse response, JsonNode body)
    {
        response.ContentType = "application/json";
        await response.WriteAsync(Text(body), Encoding.UTF8);
    }

    /// <summary>Starts an event stream: no buffering anywhere on the way, so each token leaves as it is made.</summary>
    public static async Task StartEventsAsync(HttpResponse response)
    {
        response.StatusCode = 200;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        await response.StartAsync();
    }

    /// <summary>One event ("data: {...}\n\n"), flushed.</summary>
    public static async Task WriteEventAsync(HttpResponse response, string data)
    {
        await response.WriteAsync("data: " + data + "\n\n", Encoding.UTF8);
        await response.Body.FlushAsync();
    }
}
