using Cluster.Engine.Kernels;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Loaders;

/// <summary>
/// A GGUF file (ggml docs/gguf.md, v2/v3) memory-mapped: its metadata, and after it the tensor
/// infos {gguf_string name; uint32 n_dims; uint64 ne[n_dims] (innermost first); uint32 ggml_type;
/// uint64 offset}, then tensor data from the next multiple of general.alignment (default 32), each
/// offset relative to that start. Tensors are read in place.
/// </summary>
public sealed unsafe class GgufFile : IDisposable
{
    private readonly MappedFile _file;
    private readonly Dictionary<string, Info> _tensors = new(StringComparer.Ordinal);

    /// <param name="Dims">ggml ne: innermost (row length) first.</param>
    public sealed record Info(string Name, long[] Dims, int GgmlType, long Offset)
    {
        public long Elements => Dims.Aggregate(1L, (a, b) => a * b);

        /// <summary>The shape outermost first, as PyTorch and <see cref="ICheckpointReader"/> write it.</summary>
        public long[] Shape => Dims.Reverse().ToArray();
    }

    private GgufFile(MappedFile file, GgufMetadata metadata)
    {
        _file = file;
        Metadata = metadata;
    }

    public string Path => _file.Path;
    public GgufMetadata Metadata { get; }
    public IEnumerable<Info> Tensors => _tensors.Values;

    public static GgufFile Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            using var stream = new UnmanagedMemoryStream(file.Pointer, file.Length);
            using var reader = new BinaryReader(stream);
            GgufMetadata meta;
            try { meta = GgufMetadata.Read(reader, path); }
            catch (InvalidDataException e) { throw new ModelFormatException(path, e.Message); }
            var gguf = new GgufFile(file, meta);
            gguf.ReadTensorInfos(reader);
            return gguf;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private void ReadTensorInfos(BinaryReader reader)
    {
        var infos = new List<Info>();
        try
        {
            for (ulong i = 0; i < Metadata.TensorCount; i++)
            {
                var name = GgufMetadata.ReadString(reader);
                var n = reader.ReadUInt32();
                if (n is 0 or > 4) throw new ModelFormatException(Path, $"tensor '{name}' has {n} dimensions");
                var dims = new long[n];
                for (int d = 0; d < n; d++) dims[d] = checked((long)reader.ReadUInt64());
                infos.Add(new Info(name, dims, (int)reader.ReadUInt32(), checked((long)reader.ReadUInt64())));
            }
        }
        catch (EndOfStreamException)
        {
            throw new ModelFormatException(Path, "truncated in the tensor infos");
        }
        long alignment = Metadata.GetInteger("general.alignment", 32);
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0) throw new ModelFormatException(Path, $"general.alignment {alignment} is not a power of two");
        DataStart = (reader.BaseStream.Position + alignment - 1) / alignment * alignment;
        foreach (var t in infos) _tensors[t.Name] = t;
    }

    /// <summary>File offset of the tensor data section.</summary>
    public long DataStart { get; private set; }

    public Info? Find(string name) => _tensors.GetValueOrDefault(name);

    /// <summary>The tensor as stored; throws naming the tensor and type when the type is not one we read.</summary>
    public WeightData Read(Info t)
    {
        var type = GgmlTypes.ToWeightType(t.GgmlType)
                   ?? throw new ModelFormatException(Path, $"tensor '{t.Name}' has GGML type {GgmlTypes.Name(t.GgmlType)}; supported: {GgmlTypes.SupportedList}");
        int blockElements = WeightLayout.BlockElements(type);
        if (t.Dims[0] % blockElements != 0)
            throw new ModelFormatException(Path, $"tensor '{t.Name}' rows of {t.Dims[0]} are not whole {GgmlTypes.Name(t.GgmlType)} blocks of {blockElements}");
        var data = new WeightData(_file.Pointer + DataStart + t.Offset, t.Elements, type, t.Dims[0]);
        if (DataStart + t.Offset + data.ByteLength > _file.Length)
            throw new ModelFormatException(Path, $"tensor '{t.Name}' runs past the end of the file (truncated?)");
        return data;
    }

    public void DropResidentPages() => _file.DropResidentPages();

    public void Dispose() => _file.Dispose();
}

/// <summary>ggml_type numbers (ggml.h) and the ones we read.</summary>
public static class GgmlTypes
{
    private static readonly string[] Names =
    [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
        "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];

    public const string SupportedList = "F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K";

    public static string Name(int type) => type >= 0 && type < Names.Length ? Names[type] : $"#{type}";

    public static WeightType? ToWeightType(int type) => type switch
    {
        0 => WeightType.F32,
        1 => WeightType.F16,
        2 => WeightType.Q4_0,
        8 => WeightType.Q8_0,
        12 => WeightType.Q4_K,
        14 => WeightType.Q6_K,
        30 => WeightType.BF16,
        _ => null,
    };
}
