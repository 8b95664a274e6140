using System.Text;

namespace LlmCtl.Fuzz;

/// <summary>Random protobuf wire data, JSON texts and byte strings for the fuzzer (all from one <see cref="Random"/>).</summary>
internal static class FuzzInputs
{
    public static byte[] Bytes(Random r, int max)
    {
        var b = new byte[r.Next(0, max + 1)];
        r.NextBytes(b);
        return b;
    }

    public static T Pick<T>(Random r, params T[] items) => items[r.Next(items.Length)];

    // ---- protobuf: valid wire format with random fields, nested messages and edge values ----

    public static byte[] Protobuf(Random r, int depth = 0)
    {
        var o = new List<byte>();
        int fields = r.Next(0, 8);
        for (int i = 0; i < fields; i++)
        {
            // Mostly the low field numbers every message here uses, sometimes far out (up to 2^29 - 1).
            uint number = r.Next(10) < 8 ? (uint)r.Next(1, 16) : (uint)r.Next(1, 1 << 29);
            int wire = Pick(r, 0, 0, 1, 2, 2, 2, 5, r.Next(8)); // 3, 4 (groups), 6, 7 are invalid or deprecated
            Varint(o, (ulong)number << 3 | (uint)wire);
            switch (wire)
            {
                case 0: Varint(o, Pick(r, 0UL, 1UL, (ulong)r.Next(), ulong.MaxValue, (ulong)uint.MaxValue, 0x80000000UL, (ulong)r.Next(0, 600))); break;
                case 1: for (int k = 0; k < 8; k++) o.Add((byte)r.Next(256)); break;
                case 5: foreach (var x in Pick(r, BitConverter.GetBytes(float.NaN), BitConverter.GetBytes(float.PositiveInfinity), BitConverter.GetBytes(-1f), BitConverter.GetBytes((float)r.NextDouble() * 4), BitConverter.GetBytes(r.Next()))) o.Add(x); break;
                case 2:
                    byte[] inner = r.Next(3) switch
                    {
                        0 when depth < 4 => Protobuf(r, depth + 1),
                        1 => Encoding.UTF8.GetBytes(Pick(r, "", "dense", "window(4)", "sink_window(4,60)", "qfilters(1,1)", "Once upon a time", "user", "stories", new string('x', r.Next(0, 3000)))),
                        _ => Bytes(r, 40),
                    };
                    if (r.Next(20) == 0) { Varint(o, (ulong)inner.Length + (ulong)r.Next(1, 1 << 20)); o.AddRange(inner); } // length past the end
                    else { Varint(o, (ulong)inner.Length); o.AddRange(inner); }
                    break;
                default: o.AddRange(Bytes(r, 6)); break;
            }
        }
        return [.. o];
    }

    public static void Varint(List<byte> o, ulong v)
    {
        while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; }
        o.Add((byte)v);
    }

    // ---- JSON: request-shaped objects with wrong types, odd numbers and strings, deep nesting ----

    private static readonly string[] CompletionFields = ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "stream", "stop", "seed", "logprobs", "echo", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "user", "kv_policy", "session_id", "min_tokens", "ignore_eos", "stream_options", "best_of", "suffix"];
    private static readonly string[] ChatFields = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream", "stop", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice", "user", "kv_policy", "session_id", "stream_options"];

    public static string JsonRequest(Random r, bool chat, string modelJson)
    {
        var sb = new StringBuilder("{");
        var fields = chat ? ChatFields : CompletionFields;
        int count = r.Next(0, 7);
        bool first = true;
        void Field(string name, string value) { if (!first) sb.Append(','); first = false; sb.Append('"').Append(name).Append("\":").Append(value); }
        if (r.Next(5) > 0) Field("model", modelJson);
        // Usually the required field with a plausible value, so the checks behind it are reached too.
        if (r.Next(3) > 0) Field(chat ? "messages" : "prompt", chat ? Messages(r) : Pick(r, "\"Once upon a time\"", "[1,2,3]", "[[1,2],[3]]", "[\"a\",\"b\"]", JsonValue(r, 0)));
        if (r.Next(2) == 0) Field("max_tokens", Pick(r, "1", "4", "0", "-1", JsonNumber(r), JsonValue(r, 0)));
        for (int i = 0; i < count; i++) Field(r.Next(8) == 0 ? RandomKey(r) : Pick(r, fields), JsonValue(r, 0));
        return sb.Append('}').ToString();
    }

    private static string Messages(Random r)
    {
        if (r.Next(6) == 0) return JsonValue(r, 0);
        var sb = new StringBuilder("[");
        int n = r.Next(0, 4);
        for (int i = 0; i < n; i++)
        {
            if (i > 0) sb.Append(',');
            if (r.Next(6) == 0) { sb.Append(JsonValue(r, 1)); continue; }
            sb.Append("{\"role\":").Append(Pick(r, "\"user\"", "\"system\"", "\"assistant\"", "\"tool\"", "\"developer\"", "\"\"", JsonValue(r, 2)))
              .Append(",\"content\":").Append(Pick(r, "\"hello\"", "\"\"", "[{\"type\":\"text\",\"text\":\"hi\"}]", "[{\"type\":\"image_url\"}]", "null", JsonValue(r, 2)));
            if (r.Next(4) == 0) sb.Append(',').Append('"').Append(Pick(r, "name", "tool_calls", "tool_call_id", "refusal")).Append("\":").Append(JsonValue(r, 2));
            sb.Append('}');
        }
        return sb.Append(']').ToString();
    }

    private static string RandomKey(Random r) => Pick(r, "", "\\u0000", "prompt\\u0000", "PROMPT", "__proto__", new string('k', r.Next(1, 300)));

    public static string JsonNumber(Random r) => Pick(r,
        "0", "-0", "1", "-1", "2147483647", "2147483648", "-2147483649", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "1e400", "-1e400", "1e-400", "1.5", "0.0000001", "3.4028236e38", "123456789012345678901234567890",
        "1E2", "1e+2", "-0.0", r.Next(-1000, 100000).ToString(), (r.NextDouble() * 4 - 1).ToString("R", System.Globalization.CultureInfo.InvariantCulture));

    public static string JsonValue(Random r, int depth) => (depth > 3 ? r.Next(5) : r.Next(8)) switch
    {
        0 => JsonNumber(r),
        1 => Pick(r, "true", "false", "null"),
        2 => JsonString(r),
        3 => Pick(r, "\"dense\"", "\"window(0)\"", "\"sink_window(-1,2)\"", "\"qfilters(1,1)\"", "\"gpt-4\"", "\"stories\"", "\"\""),
        4 => Pick(r, "[]", "{}", "[null]", "{\"include_usage\":true}", "{\"type\":\"json_object\"}", "{\"50256\":-100}", "{\"x\":1e999}"),
        5 => "[" + string.Join(',', Enumerable.Range(0, r.Next(0, 5)).Select(_ => JsonValue(r, depth + 1))) + "]",
        6 => "{" + string.Join(',', Enumerable.Range(0, r.Next(0, 4)).Select(_ => $"\"{Pick(r, "a", "type", "text", "role", "content", "0")}\":{JsonValue(r, depth + 1)}")) + "}",
        _ => Pick(r, "[" + string.Join(',', Enumerable.Range(0, r.Next(1, 2000)).Select(_ => r.Next(-5, 70000))) + "]", "\"" + new string('a', r.Next(1, 100_000)) + "\""),
    };

    public static string JsonString(Random r) => Pick(r,
        "\"\"", "\"Once upon a time\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\udc00\\ud800\"", "\"\\uffff\"", "\"\\n\\t\\\"\"", "\"<|endoftext|>\"",
        "\"\\u00e9\\u4e2d\\ud83d\\ude00\"", "\"{{ bos_token }}{% for %}\"", "\"" + new string('\u00e9', r.Next(1, 200)) + "\"");

    /// <summary>Nesting deeper than any parser should follow (System.Text.Json stops at 64 by default).</summary>
    public static string Deep(Random r, string modelJson)
    {
        int depth = Pick(r, 63, 64, 65, 1000, r.Next(1, 200_000));
        string open = r.Next(2) == 0 ? "[" : "{\"a\":", close = open == "[" ? "]" : "}";
        var inner = string.Concat(Enumerable.Repeat(open, depth)) + "1" + (r.Next(4) == 0 ? "" : string.Concat(Enumerable.Repeat(close, depth)));
        return r.Next(2) == 0 ? inner : "{\"model\":" + modelJson + ",\"prompt\":" + inner + ",\"max_tokens\":2}";
    }

    /// <summary>A request body with bytes that are not UTF-8 inside a string.</summary>
    public static byte[] InvalidUtf8(Random r, string modelJson)
    {
        var bad = Pick(r, new byte[] { 0xFF }, [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF8, 0x88, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80], [0xF4, 0x90, 0x80, 0x80]);
        return [.. Encoding.UTF8.GetBytes("{\"model\":" + modelJson + ",\"prompt\":\"ab"), .. bad, .. "cd\",\"max_tokens\":2}"u8];
    }
}
