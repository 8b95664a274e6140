using System.Text.Json;

namespace Cluster.Gateway.OpenAi;

/// <summary>
/// Typed reads of a request body's top-level fields: a field of the wrong type is a 400 naming it
/// (OpenAI's "param"), an absent or null one reads as null. Unknown fields are ignored, as OpenAI's
/// clients send some the server may not know.
/// </summary>
internal readonly struct JsonFields(JsonElement root)
{
    public JsonElement Root => root;

    public static JsonFields Parse(JsonDocument body) => body.RootElement.ValueKind == JsonValueKind.Object
        ? new JsonFields(body.RootElement)
        : throw OpenAiException.BadRequest($"the request body must be a JSON object, got {body.RootElement.ValueKind.ToString().ToLowerInvariant()}");

    public JsonElement? Get(string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined) ? v : null;

    public string? String(string name) => Get(name) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw Wrong(name, "a string", v)
        : null;

    public bool? Bool(string name) => Get(name) is { } v
        ? v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw Wrong(name, "a boolean", v)
        : null;

    public float? Number(string name) => Get(name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && double.IsFinite(d) ? (float)d : throw Wrong(name, "a number", v)
        : null;

    public int? Int(string name) => Get(name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw Wrong(name, "an integer", v)
        : null;

    public long? Long(string name) => Get(name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var i) ? i : throw Wrong(name, "an integer", v)
        : null;

    /// <summary>A string or an array of strings (OpenAI's "stop").</summary>
    public List<string> Strings(string name)
    {
        if (Get(name) is not { } v) return [];
        if (v.ValueKind == JsonValueKind.String) return [v.GetString()!];
        if (v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
            return v.EnumerateArray().Select(e => e.GetString()!).ToList();
        throw Wrong(name, "a string or an array of strings", v);
    }

    public JsonFields? Object(string name) => Get(name) is { } v
        ? v.ValueKind == JsonValueKind.Object ? new JsonFields(v) : throw Wrong(name, "an object", v)
        : null;

    public static OpenAiException Wrong(string name, string expected, JsonElement got) =>
        OpenAiException.BadRequest($"'{name}' must be {expected}, got {Describe(got)}", name);

    private static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => $"the string \"{Truncate(v.GetString()!)}\"",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => $"the boolean {v.GetRawText()}",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";
}
