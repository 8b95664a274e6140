using Cluster.Engine.Kernels;
using Cluster.Engine.Model;

namespace Cluster.Engine.Loaders;

/// <summary>
/// A GGUF model with general.architecture = llama (llama.cpp's LLM_ARCH_LLAMA): hyper-parameters
/// from the llama.* keys, tensors by llama.cpp's names (token_embd, blk.N.attn_q, ..., output),
/// mapped to the Hugging Face names every reader answers to. llama.cpp's converters store Q and K
/// in Meta's layout and llama.cpp rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM), so RoPE is
/// <see cref="RopeLayout.Interleaved"/>. No output.weight means the classifier is the embedding.
/// </summary>
public sealed class GgufCheckpoint : ICheckpointReader
{
    private readonly GgufFile _file;

    private GgufCheckpoint(GgufFile file, LlamaConfig config)
    {
        _file = file;
        Config = config;
    }

    public LlamaConfig Config { get; }

    public static bool IsGguf(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.Read(magic) == 4 && magic.SequenceEqual("GGUF"u8);
    }

    public static GgufCheckpoint Open(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return new GgufCheckpoint(file, ReadConfig(file));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static LlamaConfig ReadConfig(GgufFile file)
    {
        var m = file.Metadata;
        var arch = m.Get<string>("general.architecture") ?? throw new ModelFormatException(file.Path, "has no general.architecture");
        if (arch != "llama") throw new ModelFormatException(file.Path, $"general.architecture '{arch}' is not supported (only llama)");
        int Int(string key, int? fallback = null)
        {
            var v = m.GetInteger($"llama.{key}", long.MinValue);
            if (v != long.MinValue) return checked((int)v);
            return fallback ?? throw new ModelFormatException(file.Path, $"missing llama.{key}");
        }
        float Float(string key, float fallback) => m.Values.TryGetValue($"llama.{key}", out var v) && v is float f ? f : fallback;
        if (m.Values.ContainsKey("llama.rope.scaling.type") && m.Get<string>("llama.rope.scaling.type") is { } st && st != "none")
            throw new ModelFormatException(file.Path, $"llama.rope.scaling.type '{st}' is not supported");
        if (file.Find("rope_freqs.weight") is not null)
            throw new ModelFormatException(file.Path, "rope_freqs.weight (Llama 3.1 RoPE frequency factors) is not supported yet");

        int dim = Int("embedding_length"), heads = Int("attention.head_count");
        var embd = file.Find("token_embd.weight") ?? throw new ModelFormatException(file.Path, "has no tensor 'token_embd.weight'");
        int vocab = Int("vocab_size", (int)embd.Dims[1]);
        int headDim = Int("rope.dimension_count", dim / heads);
        var eos = (int)m.GetInteger("tokenizer.ggml.eos_token_id", 2);
        var config = new LlamaConfig
        {
            Dim = dim,
            HiddenDim = Int("feed_forward_length"),
            Layers = Int("block_count"),
            Heads = heads,
            KvHeads = Int("attention.head_count_kv", heads),
            HeadDimOverride = headDim != dim / heads ? headDim : null,
            VocabSize = vocab,
            MaxPositions = Int("context_length", 2048),
            RmsNormEps = Float("attention.layer_norm_rms_epsilon", 1e-5f),
            RopeTheta = Float("rope.freq_base", 10000f),
            RopeLayout = RopeLayout.Interleaved,
            TiedEmbeddings = file.Find("output.weight") is null,
            BosId = (int)m.GetInteger("tokenizer.ggml.bos_token_id", 1),
            EosIds = [eos],
        };
        try { config.Validate(); }
        catch (ArgumentException e) { throw new ModelFormatException(file.Path, e.Message); }
        return config;
    }

    /// <summary>llama.cpp's tensor name for a Hugging Face one (llama-arch.cpp LLM_TENSOR_NAMES).</summary>
    public static string GgufName(string hfName)
    {
        switch (hfName)
        {
            case TensorNames.Embedding: return "token_embd.weight";
            case TensorNames.FinalNorm: return "output_norm.weight";
            case TensorNames.Classifier: return "output.weight";
        }
        var parts = hfName.Split('.'); // model.layers.{l}.{module}.{proj}.weight
        var layer = parts[2];
        var what = string.Join('.', parts[3..^1]) switch
        {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.down_proj" => "ffn_down",
            "mlp.up_proj" => "ffn_up",
            var other => throw new ArgumentException($"no GGUF name for '{hfName}' ({other})"),
        };
        return $"blk.{layer}.{what}.weight";
    }

    public WeightData Read(string name, long[] shape)
    {
        var gguf = GgufName(name);
        var t = _file.Find(gguf) ?? throw new ModelFormatException(_file.Path, $"has no tensor '{gguf}'");
        if (!t.Shape.SequenceEqual(shape))
            throw new ModelFormatException(_file.Path, $"tensor '{gguf}' has shape [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}] from its llama.* metadata");
        return _file.Read(t);
    }

    public void DropResidentPages() => _file.DropResidentPages();

    public void Dispose() => _file.Dispose();
}
