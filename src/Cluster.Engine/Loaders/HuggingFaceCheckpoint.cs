using System.Text.Json;
using Cluster.Engine.Kernels;
using Cluster.Engine.Model;

namespace Cluster.Engine.Loaders;

/// <summary>
/// A Hugging Face model folder: config.json (LlamaForCausalLM) with model.safetensors or shards
/// listed in model.safetensors.index.json. Hugging Face permutes q/k rows for its rotate-half RoPE,
/// so these weights use <see cref="RopeLayout.Halves"/>.
/// </summary>
public sealed class HuggingFaceCheckpoint : ICheckpointReader
{
    private static readonly string[] SupportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM"];
    private readonly List<SafetensorsFile> _files = [];
    private readonly Dictionary<string, SafetensorsFile> _byTensor = [];

    private HuggingFaceCheckpoint(string folder, LlamaConfig config)
    {
        Folder = folder;
        Config = config;
    }

    public string Folder { get; }
    public LlamaConfig Config { get; }

    public static HuggingFaceCheckpoint Open(string folder)
    {
        var config = ReadConfig(Path.Combine(folder, "config.json"));
        var ckpt = new HuggingFaceCheckpoint(folder, config);
        try
        {
            ckpt.OpenWeights();
            return ckpt;
        }
        catch
        {
            ckpt.Dispose();
            throw;
        }
    }

    private void OpenWeights()
    {
        var single = Path.Combine(Folder, "model.safetensors");
        var index = Path.Combine(Folder, "model.safetensors.index.json");
        if (File.Exists(single))
        {
            var f = SafetensorsFile.Open(single);
            _files.Add(f);
            foreach (var n in f.Names) _byTensor[n] = f;
        }
        else if (File.Exists(index))
        {
            using var doc = ParseJson(index);
            if (!doc.RootElement.TryGetProperty("weight_map", out var map))
                throw new ModelFormatException(index, "has no 'weight_map'");
            var shards = new Dictionary<string, SafetensorsFile>();
            foreach (var entry in map.EnumerateObject())
            {
                var shard = entry.Value.GetString()!;
                if (!shards.TryGetValue(shard, out var f))
                {
                    var shardPath = Path.Combine(Folder, shard);
                    if (!File.Exists(shardPath)) throw new ModelFormatException(index, $"lists shard '{shard}', which does not exist");
                    shards[shard] = f = SafetensorsFile.Open(shardPath);
                    _files.Add(f);
                }
                _byTensor[entry.Name] = f;
            }
        }
        else
        {
            throw new ModelFormatException(Folder, "has neither model.safetensors nor model.safetensors.index.json (only safetensors weights are supported)");
        }
    }

    public WeightData Read(string name, long[] shape) =>
        _byTensor.TryGetValue(name, out var f)
            ? f.Read(name, shape)
            : throw new ModelFormatException(_files.Count == 1 ? _files[0].Path : Folder, $"has no tensor '{name}'");

    /// <summary>Reads a Llama config.json; throws <see cref="ModelFormatException"/> naming the bad key.</summary>
    public static LlamaConfig ReadConfig(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "not found (a Hugging Face model folder needs config.json)");
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        var archs = root.TryGetProperty("architectures", out var a) ? a.EnumerateArray().Select(x => x.GetString()).ToArray() : [];
        if (archs.Length > 0 && !archs.Any(x => SupportedArchitectures.Contains(x)))
            throw new ModelFormatException(path, $"architecture {string.Join(", ", archs)} is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Int(string key, int? fallback = null)
        {
            if (root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number) return v.GetInt32();
            return fallback ?? throw new ModelFormatException(path, $"missing integer '{key}'");
        }
        double Num(string key, double fallback) =>
            root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : fallback;
        bool Bool(string key, bool fallback) =>
            root.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
        int[] Ids(string key, int[] fallback) => !root.TryGetProperty(key, out var v) ? fallback : v.ValueKind switch
        {
            JsonValueKind.Number => [v.GetInt32()],
            JsonValueKind.Array => v.EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            _ => fallback,
        };

        if (root.TryGetProperty("sliding_window", out var sw) && sw.ValueKind == JsonValueKind.Number && sw.GetInt32() < Int("max_position_embeddings", int.MaxValue))
            throw new ModelFormatException(path, $"sliding_window={sw.GetInt32()} attention is not supported");
        foreach (var bias in new[] { "attention_bias", "mlp_bias" })
            if (Bool(bias, false)) throw new ModelFormatException(path, $"{bias}=true is not supported");
        var act = root.TryGetProperty("hidden_act", out var h) ? h.GetString() : "silu";
        if (act != "silu") throw new ModelFormatException(path, $"hidden_act '{act}' is not supported (only silu)");

        var config = new LlamaConfig
        {
            Dim = Int("hidden_size"),
            HiddenDim = Int("intermediate_size"),
            Layers = Int("num_hidden_layers"),
            Heads = Int("num_attention_heads"),
            KvHeads = Int("num_key_value_heads", Int("num_attention_heads")),
            HeadDimOverride = root.TryGetProperty("head_dim", out var hd) && hd.ValueKind == JsonValueKind.Number ? hd.GetInt32() : null,
            VocabSize = Int("vocab_size"),
            MaxPositions = Int("max_position_embeddings", 2048),
            RmsNormEps = (float)Num("rms_norm_eps", 1e-6),
            RopeTheta = Num("rope_theta", 10000),
            RopeScaling = ReadRopeScaling(root, path),
            RopeLayout = RopeLayout.Halves,
            TiedEmbeddings = Bool("tie_word_embeddings", false),
            BosId = Ids("bos_token_id", [1])[0],
            EosIds = Ids("eos_token_id", [2]),
        };
        try { config.Validate(); }
        catch (ArgumentException e) { throw new ModelFormatException(path, e.Message); }
        return config;
    }

    private static Llama3RopeScaling? ReadRopeScaling(JsonElement root, string path)
    {
        if (!root.TryGetProperty("rope_scaling", out var s) || s.ValueKind == JsonValueKind.Null) return null;
        var type = s.TryGetProperty("rope_type", out var t) ? t.GetString() : s.TryGetProperty("type", out t) ? t.GetString() : null;
        if (type == "default") return null;
        if (type != "llama3") throw new ModelFormatException(path, $"rope_scaling type '{type}' is not supported (supported: llama3)");
        double Get(string key) => s.TryGetProperty(key, out var v) ? v.GetDouble() : throw new ModelFormatException(path, $"rope_scaling lacks '{key}'");
        return new Llama3RopeScaling(Get("factor"), Get("low_freq_factor"), Get("high_freq_factor"), (int)Get("original_max_position_embeddings"));
    }

    private static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new ModelFormatException(path, $"is not valid JSON: {e.Message}"); }
    }

    public void DropResidentPages()
    {
        foreach (var f in _files) f.DropResidentPages();
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
