using System.Buffers.Binary;
using Cluster.Engine.Kernels;
using Cluster.Engine.Model;

namespace Cluster.Engine.Loaders;

/// <summary>
/// llama2.c checkpoints (karpathy/llama2.c export.py), fp32, memory-mapped:
/// <list type="bullet">
/// <item>legacy (version 0): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size —
/// negative when the classifier is not shared — seq_len), then embedding, per-kind stacks of layer
/// weights, final norm, the unused freq_cis tables, and the classifier if unshared;</item>
/// <item>version 1: magic "ak42", version, the same 7 int32, a shared-classifier byte, padding to
/// 256 bytes, then norms first, embedding, layer weights, classifier if unshared.</item>
/// </list>
/// Weights are in Meta's layout, so RoPE pairs are interleaved.
/// </summary>
public sealed unsafe class Llama2cCheckpoint : ICheckpointReader
{
    private const uint Magic = 0x616b3432; // "ak42" read little-endian
    private readonly MappedFile _file;
    private readonly Dictionary<string, (long Offset, long[] Shape)> _tensors = [];

    private Llama2cCheckpoint(MappedFile file) => _file = file;

    public LlamaConfig Config { get; private set; } = null!;

    /// <summary>1 for the "ak42" version-1 format, 0 for the legacy header.</summary>
    public int Version { get; private set; }

    public static Llama2cCheckpoint Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            var ckpt = new Llama2cCheckpoint(file);
            ckpt.Parse();
            return ckpt;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private void Parse()
    {
        var path = _file.Path;
        int Int(long offset) => BinaryPrimitives.ReadInt32LittleEndian(_file.Span(offset, 4));
        long dataStart;
        bool shared;
        int[] p = new int[7];
        if ((uint)Int(0) == Magic)
        {
            Version = Int(4);
            if (Version != 1)
                throw new ModelFormatException(path, $"llama2.c format version {Version} is not supported (only fp32 versions 0 and 1; version 2 is int8-quantized)");
            for (int i = 0; i < 7; i++) p[i] = Int(8 + 4 * i);
            shared = _file.Span(36, 1)[0] != 0;
            dataStart = 256;
        }
        else
        {
            for (int i = 0; i < 7; i++) p[i] = Int(4 * i);
            shared = p[5] > 0;
            p[5] = Math.Abs(p[5]);
            dataStart = 28;
        }
        int dim = p[0], hidden = p[1], layers = p[2], heads = p[3], kvHeads = p[4], vocab = p[5], seqLen = p[6];
        if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || vocab <= 0 || seqLen <= 0 || dim > 1 << 16 || layers > 1024)
            throw new ModelFormatException(path, $"not a llama2.c checkpoint: implausible header (dim={dim}, hidden_dim={hidden}, n_layers={layers}, n_heads={heads}, n_kv_heads={kvHeads}, vocab_size={vocab}, seq_len={seqLen}); wrong magic or file type?");
        Config = new LlamaConfig
        {
            Dim = dim, HiddenDim = hidden, Layers = layers, Heads = heads, KvHeads = kvHeads,
            VocabSize = vocab, MaxPositions = seqLen, TiedEmbeddings = shared,
            RopeLayout = RopeLayout.Interleaved, RopeTheta = 10000, RmsNormEps = 1e-5f, BosId = 1, EosIds = [2],
        };
        try { Config.Validate(); }
        catch (ArgumentException e) { throw new ModelFormatException(path, e.Message); }

        int hd = Config.HeadDim, kvDim = Config.KvDim, qDim = Config.QueryDim;
        long offset = dataStart;
        void Stack(Func<int, string> name, params long[] shape)
        {
            long size = shape.Aggregate(1L, (a, b) => a * b) * 4;
            for (int l = 0; l < layers; l++, offset += size) _tensors[name(l)] = (offset, shape);
        }
        void One(string name, params long[] shape)
        {
            _tensors[name] = (offset, shape);
            offset += shape.Aggregate(1L, (a, b) => a * b) * 4;
        }
        if (Version == 1)
        {
            Stack(TensorNames.AttentionNorm, dim);
            Stack(TensorNames.FfnNorm, dim);
            One(TensorNames.FinalNorm, dim);
            One(TensorNames.Embedding, vocab, dim);
        }
        else
        {
            One(TensorNames.Embedding, vocab, dim);
            Stack(TensorNames.AttentionNorm, dim);
        }
        Stack(TensorNames.Wq, qDim, dim);
        Stack(TensorNames.Wk, kvDim, dim);
        Stack(TensorNames.Wv, kvDim, dim);
        Stack(TensorNames.Wo, dim, qDim);
        if (Version == 0) Stack(TensorNames.FfnNorm, dim);
        Stack(TensorNames.Gate, hidden, dim);
        Stack(TensorNames.Down, dim, hidden);
        Stack(TensorNames.Up, hidden, dim);
        if (Version == 0)
        {
            One(TensorNames.FinalNorm, dim);
            offset += 2L * seqLen * (hd / 2) * 4; // freq_cis_real and _imag: RoPE is computed, not read
        }
        if (!shared) One(TensorNames.Classifier, vocab, dim);
        if (offset > _file.Length)
            throw new ModelFormatException(path, $"truncated: the header (dim={dim}, n_layers={layers}, vocab_size={vocab}) needs {offset} bytes but the file has {_file.Length}");
        if (offset < _file.Length)
            throw new ModelFormatException(path, $"{_file.Length - offset} bytes more than the header (dim={dim}, n_layers={layers}, vocab_size={vocab}{(shared ? ", shared classifier" : "")}) describes; not a llama2.c fp32 checkpoint?");
    }

    public WeightData Read(string name, long[] shape)
    {
        if (!_tensors.TryGetValue(name, out var t)) throw new ModelFormatException(_file.Path, $"has no tensor '{name}'");
        if (!t.Shape.SequenceEqual(shape))
            throw new ModelFormatException(_file.Path, $"tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}]");
        return new WeightData(_file.Pointer + t.Offset, t.Shape.Aggregate(1L, (a, b) => a * b), WeightType.F32, t.Shape[^1]);
    }

    public void DropResidentPages() => _file.DropResidentPages();

    public void Dispose() => _file.Dispose();
}
