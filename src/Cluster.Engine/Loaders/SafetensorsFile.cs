using System.Buffers.Binary;
using System.Text.Json;
using Cluster.Engine.Kernels;

namespace Cluster.Engine.Loaders;

/// <summary>
/// One .safetensors file, memory-mapped. Format (huggingface/safetensors): u64 little-endian header
/// size N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
/// then the data; offsets are relative to the first byte after the header.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly MappedFile _file;
    private readonly Dictionary<string, Entry> _entries = [];
    private long _dataStart;

    private sealed record Entry(string DType, long[] Shape, long Begin, long End);

    private SafetensorsFile(MappedFile file) => _file = file;

    public string Path => _file.Path;

    public IEnumerable<string> Names => _entries.Keys;

    public static SafetensorsFile Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            var st = new SafetensorsFile(file);
            st.Parse();
            return st;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private void Parse()
    {
        var headerSize = BinaryPrimitives.ReadUInt64LittleEndian(_file.Span(0, 8));
        if (headerSize > (ulong)(_file.Length - 8) || headerSize > 100_000_000)
            throw new ModelFormatException(Path, $"not a safetensors file or truncated: header size {headerSize} but the file has {_file.Length} bytes");
        _dataStart = 8 + (long)headerSize;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(_file.Span(8, (int)headerSize).ToArray()); }
        catch (JsonException e) { throw new ModelFormatException(Path, $"safetensors header is not valid JSON: {e.Message}"); }
        using (doc)
        {
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__") continue;
                try
                {
                    var v = prop.Value;
                    var shape = v.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    var offsets = v.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
                    var entry = new Entry(v.GetProperty("dtype").GetString()!, shape, offsets[0], offsets[1]);
                    if (entry.Begin < 0 || entry.End < entry.Begin || _dataStart + entry.End > _file.Length)
                        throw new ModelFormatException(Path, $"truncated: tensor '{prop.Name}' needs bytes {entry.Begin}..{entry.End} of the data but only {_file.Length - _dataStart} are present");
                    _entries[prop.Name] = entry;
                }
                catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException or FormatException)
                {
                    throw new ModelFormatException(Path, $"malformed header entry for tensor '{prop.Name}': {e.Message}");
                }
            }
        }
    }

    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>The stored shape of <paramref name="name"/>, or null when absent.</summary>
    public long[]? Shape(string name) => _entries.TryGetValue(name, out var e) ? e.Shape : null;

    /// <summary>The tensor as stored; throws when missing, of another shape, or of an unsupported dtype.</summary>
    public WeightData Read(string name, long[] shape)
    {
        if (!_entries.TryGetValue(name, out var e)) throw new ModelFormatException(Path, $"has no tensor '{name}'");
        if (!e.Shape.SequenceEqual(shape))
            throw new ModelFormatException(Path, $"tensor '{name}' has shape [{string.Join(", ", e.Shape)}], expected [{string.Join(", ", shape)}] from config.json");
        var type = e.DType switch
        {
            "F32" => WeightType.F32,
            "F16" => WeightType.F16,
            "BF16" => WeightType.BF16,
            _ => throw new ModelFormatException(Path, $"tensor '{name}' has dtype {e.DType}; supported: F32, F16, BF16"),
        };
        var elements = e.Shape.Aggregate(1L, (a, b) => a * b);
        var data = new WeightData(_file.Pointer + _dataStart + e.Begin, elements, type, e.Shape.Length > 0 ? e.Shape[^1] : 0);
        if (data.ByteLength != e.End - e.Begin)
            throw new ModelFormatException(Path, $"tensor '{name}' spans {e.End - e.Begin} bytes but shape and dtype need {data.ByteLength}");
        return data;
    }

    public void DropResidentPages() => _file.DropResidentPages();

    public void Dispose() => _file.Dispose();
}
