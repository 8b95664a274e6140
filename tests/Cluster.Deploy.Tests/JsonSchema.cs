using System.Text.Json;
using System.Text.RegularExpressions;

namespace Cluster.Deploy.Tests;

/// <summary>
/// The subset of JSON Schema (draft 7) that values.schema.json uses: type, properties, required,
/// additionalProperties, items, enum, minimum, maximum, minLength, pattern. Validates the plain
/// trees of <see cref="Yaml"/>; anything else in a schema is an error, so the subset cannot
/// silently grow past what is checked.
/// </summary>
public static class JsonSchema
{
    private static readonly HashSet<string> Known = ["$schema", "title", "description", "type", "properties", "required",
        "additionalProperties", "items", "enum", "minimum", "maximum", "minLength", "pattern"];

    public static List<string> Validate(JsonElement schema, object? value, string path = "$")
    {
        var errors = new List<string>();
        foreach (var p in schema.EnumerateObject().Where(p => !Known.Contains(p.Name)))
            errors.Add($"{path}: schema keyword '{p.Name}' is not supported by this validator");
        if (schema.TryGetProperty("type", out var type))
        {
            var types = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()!).ToList() : [type.GetString()!];
            if (!types.Any(t => IsType(value, t)))
            {
                errors.Add($"{path}: expected {string.Join(" or ", types)}, got {Describe(value)}");
                return errors;
            }
        }
        if (schema.TryGetProperty("enum", out var options) && !options.EnumerateArray().Any(o => Equal(o, value)))
            errors.Add($"{path}: {Describe(value)} is not one of {options}");
        if (value is long or double)
        {
            var n = Convert.ToDouble(value);
            if (schema.TryGetProperty("minimum", out var min) && n < min.GetDouble()) errors.Add($"{path}: {n} < minimum {min}");
            if (schema.TryGetProperty("maximum", out var max) && n > max.GetDouble()) errors.Add($"{path}: {n} > maximum {max}");
        }
        if (value is string s)
        {
            if (schema.TryGetProperty("minLength", out var len) && s.Length < len.GetInt32()) errors.Add($"{path}: shorter than {len}");
            if (schema.TryGetProperty("pattern", out var pattern) && !Regex.IsMatch(s, pattern.GetString()!)) errors.Add($"{path}: '{s}' does not match {pattern}");
        }
        if (value is Dictionary<string, object?> map)
        {
            if (schema.TryGetProperty("required", out var required))
                foreach (var key in required.EnumerateArray().Select(k => k.GetString()!).Where(k => !map.ContainsKey(k)))
                    errors.Add($"{path}: '{key}' is required");
            var properties = schema.TryGetProperty("properties", out var props) ? props : default;
            foreach (var (key, item) in map)
            {
                if (properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(key, out var sub))
                    errors.AddRange(Validate(sub, item, $"{path}.{key}"));
                else if (schema.TryGetProperty("additionalProperties", out var extra))
                {
                    if (extra.ValueKind == JsonValueKind.False) errors.Add($"{path}: '{key}' is not allowed");
                    else if (extra.ValueKind == JsonValueKind.Object) errors.AddRange(Validate(extra, item, $"{path}.{key}"));
                }
            }
        }
        if (value is List<object?> list && schema.TryGetProperty("items", out var items))
            for (int i = 0; i < list.Count; i++) errors.AddRange(Validate(items, list[i], $"{path}[{i}]"));
        return errors;
    }

    private static bool IsType(object? value, string type) => type switch
    {
        "object" => value is Dictionary<string, object?>,
        "array" => value is List<object?>,
        "string" => value is string,
        "integer" => value is long,
        "number" => value is long or double,
        "boolean" => value is bool,
        "null" => value is null,
        _ => throw new NotSupportedException($"type '{type}'"),
    };

    private static bool Equal(JsonElement option, object? value) => option.ValueKind switch
    {
        JsonValueKind.String => value is string s && s == option.GetString(),
        JsonValueKind.Number => value is long or double && Convert.ToDouble(value) == option.GetDouble(),
        JsonValueKind.True => value is true,
        JsonValueKind.False => value is false,
        JsonValueKind.Null => value is null,
        _ => false,
    };

    private static string Describe(object? value) => value switch
    {
        null => "null",
        string s => $"string '{s}'",
        Dictionary<string, object?> => "object",
        List<object?> => "array",
        _ => $"{value.GetType().Name} {value}",
    };
}
