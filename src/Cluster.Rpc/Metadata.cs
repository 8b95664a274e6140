using System.Collections;

namespace Cluster.Rpc;

/// <summary>
/// Custom metadata (request headers, response headers or trailers). Keys are lower-case ASCII;
/// keys ending in "-bin" carry binary values, base64-encoded on the wire (gRPC over HTTP/2 spec,
/// "Custom-Metadata").
/// </summary>
public sealed class Metadata : IEnumerable<Metadata.Entry>
{
    public const string BinarySuffix = "-bin";

    private readonly List<Entry> _entries = [];

    /// <summary>One key and value; <see cref="ValueBytes"/> is set only for "-bin" keys.</summary>
    public sealed record Entry(string Key, string Value, byte[]? ValueBytes)
    {
        public bool IsBinary => ValueBytes is not null;
    }

    public int Count => _entries.Count;

    public Metadata Add(string key, string value)
    {
        key = NormalizeKey(key);
        if (IsBinaryKey(key)) throw new ArgumentException($"binary key '{key}' needs a byte[] value", nameof(key));
        _entries.Add(new Entry(key, value, null));
        return this;
    }

    public Metadata Add(string key, byte[] value)
    {
        key = NormalizeKey(key);
        if (!IsBinaryKey(key)) throw new ArgumentException($"key '{key}' for a byte[] value must end in '-bin'", nameof(key));
        _entries.Add(new Entry(key, Convert.ToBase64String(value), value));
        return this;
    }

    /// <summary>The last value of <paramref name="key"/>, or null.</summary>
    public string? GetValue(string key) => _entries.LastOrDefault(e => e.Key == NormalizeKey(key))?.Value;

    /// <summary>The last binary value of <paramref name="key"/> (a "-bin" key), or null.</summary>
    public byte[]? GetBytes(string key) => _entries.LastOrDefault(e => e.Key == NormalizeKey(key))?.ValueBytes;

    public IEnumerator<Entry> GetEnumerator() => _entries.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    internal static bool IsBinaryKey(string key) => key.EndsWith(BinarySuffix, StringComparison.Ordinal);

    /// <summary>Adds a value as read from the wire: "-bin" values are base64 (padded or not).</summary>
    internal void AddFromWire(string key, string value)
    {
        key = NormalizeKey(key);
        if (!IsBinaryKey(key))
        {
            _entries.Add(new Entry(key, value, null));
            return;
        }
        // HTTP may join repeated headers with commas; each part is one base64 value.
        foreach (var part in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var padded = part.PadRight(part.Length + (4 - part.Length % 4) % 4, '=');
            _entries.Add(new Entry(key, part, Convert.FromBase64String(padded)));
        }
    }

    /// <summary>The wire form of an entry's value: binary values base64 without padding, as the spec asks to emit.</summary>
    internal static string WireValue(Entry e) => e.ValueBytes is null ? e.Value : Convert.ToBase64String(e.ValueBytes).TrimEnd('=');

    private static string NormalizeKey(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        return key.ToLowerInvariant();
    }
}
