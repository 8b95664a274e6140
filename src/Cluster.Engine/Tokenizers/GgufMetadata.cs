using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// The key-value section of a GGUF file (ggml docs/gguf.md, versions 2 and 3): "GGUF", uint32 version,
/// uint64 tensor_count, uint64 kv_count, then kv_count of {gguf_string key, uint32 type, value}, all
/// little-endian. Strings are uint64 length + UTF-8; arrays are uint32 element type + uint64 count + elements.
/// Only the metadata is read; tensor infos and data that follow are left alone.
/// </summary>
public sealed class GgufMetadata
{
    private enum ValueType : uint
    {
        UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
        String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
    }

    private readonly Dictionary<string, object> _values;

    private GgufMetadata(uint version, ulong tensorCount, Dictionary<string, object> values)
    {
        Version = version;
        TensorCount = tensorCount;
        _values = values;
    }

    public uint Version { get; }

    /// <summary>Number of tensor infos that follow the metadata in the file.</summary>
    public ulong TensorCount { get; }
    public IReadOnlyDictionary<string, object> Values => _values;

    /// <exception cref="InvalidDataException">Not a GGUF v2/v3 file, or truncated.</exception>
    public static GgufMetadata Read(string path)
    {
        using var reader = new BinaryReader(new BufferedStream(File.OpenRead(path), 1 << 16));
        return Read(reader, path);
    }

    /// <summary>Reads the header and metadata from the start of <paramref name="reader"/>, leaving it
    /// at the first tensor info.</summary>
    public static GgufMetadata Read(BinaryReader reader, string path)
    {
        try
        {
            if (reader.ReadUInt32() != 0x46554747) throw new InvalidDataException($"{path}: not a GGUF file (magic)");
            var version = reader.ReadUInt32();
            if (version is < 2 or > 3) throw new InvalidDataException($"{path}: GGUF version {version} (2 and 3 are supported)");
            var tensorCount = reader.ReadUInt64();
            var count = reader.ReadUInt64();
            var values = new Dictionary<string, object>(StringComparer.Ordinal);
            for (ulong i = 0; i < count; i++)
            {
                var key = ReadString(reader);
                values[key] = ReadValue(reader, (ValueType)reader.ReadUInt32());
            }
            return new GgufMetadata(version, tensorCount, values);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: truncated GGUF metadata");
        }
    }

    public T? Get<T>(string key) => _values.TryGetValue(key, out var v) && v is T t ? t : default;

    /// <summary>An integer value of any GGUF integer type, or <paramref name="fallback"/>.</summary>
    public long GetInteger(string key, long fallback) => _values.TryGetValue(key, out var v) && v is IConvertible c && v is not string and not bool
        ? c.ToInt64(null) : fallback;

    public bool GetBool(string key, bool fallback) => _values.TryGetValue(key, out var v) && v is bool b ? b : fallback;

    internal static string ReadString(BinaryReader reader)
    {
        var length = reader.ReadUInt64();
        if (length > int.MaxValue) throw new InvalidDataException($"GGUF string of {length} bytes");
        var bytes = reader.ReadBytes((int)length);
        if (bytes.Length != (int)length) throw new EndOfStreamException();
        return Encoding.UTF8.GetString(bytes);
    }

    private static object ReadValue(BinaryReader reader, ValueType type) => type switch
    {
        ValueType.UInt8 => reader.ReadByte(),
        ValueType.Int8 => reader.ReadSByte(),
        ValueType.UInt16 => reader.ReadUInt16(),
        ValueType.Int16 => reader.ReadInt16(),
        ValueType.UInt32 => reader.ReadUInt32(),
        ValueType.Int32 => reader.ReadInt32(),
        ValueType.Float32 => reader.ReadSingle(),
        ValueType.Bool => reader.ReadByte() != 0,
        ValueType.String => ReadString(reader),
        ValueType.UInt64 => reader.ReadUInt64(),
        ValueType.Int64 => reader.ReadInt64(),
        ValueType.Float64 => reader.ReadDouble(),
        ValueType.Array => ReadArray(reader),
        _ => throw new InvalidDataException($"GGUF value type {(uint)type}"),
    };

    /// <summary>Typed arrays for the element types tokenizers use (string[], float[], int[]); object[] otherwise.</summary>
    private static object ReadArray(BinaryReader reader)
    {
        var type = (ValueType)reader.ReadUInt32();
        var count = reader.ReadUInt64();
        if (count > int.MaxValue) throw new InvalidDataException($"GGUF array of {count} elements");
        var n = (int)count;
        switch (type)
        {
            case ValueType.String:
                var strings = new string[n];
                for (var i = 0; i < n; i++) strings[i] = ReadString(reader);
                return strings;
            case ValueType.Float32:
                var floats = new float[n];
                for (var i = 0; i < n; i++) floats[i] = reader.ReadSingle();
                return floats;
            case ValueType.Int32:
                var ints = new int[n];
                for (var i = 0; i < n; i++) ints[i] = reader.ReadInt32();
                return ints;
            default:
                var items = new object[n];
                for (var i = 0; i < n; i++) items[i] = ReadValue(reader, type);
                return items;
        }
    }
}
