using System.Text.Json;
using System.Text.Json.Nodes;
using Cluster.Engine.Kernels;
using Cluster.Engine.Model;

namespace Cluster.Engine.Loaders;

/// <summary>
/// Writes a Hugging Face LlamaForCausalLM folder (config.json + model.safetensors) with values from
/// a callback (a checkpoint reader, or random numbers for synthetic checkpoints). Weights in Meta's interleaved-RoPE layout get their q/k rows permuted into
/// Hugging Face's rotate-half layout, as transformers' convert_llama_weights_to_hf.py does.
/// </summary>
public static class HuggingFaceWriter
{
    /// <summary>Copies every tensor of <paramref name="source"/>.</summary>
    public static void Write(string folder, LlamaConfig config, ICheckpointReader source, WeightType type, Action<int, int>? progress = null) =>
        Write(folder, config, (name, shape, dst) => source.Read(name, shape).CopyToFloat32(dst), type, progress);

    /// <summary>Writes tensors whose fp32 values <paramref name="fill"/>(name, shape, destination) provides
    /// in the layout of <paramref name="config"/>.RopeLayout.</summary>
    public static void Write(string folder, LlamaConfig config, Action<string, long[], Span<float>> fill, WeightType type, Action<int, int>? progress = null)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), ConfigJson(config, type));
        bool permute = config.RopeLayout == RopeLayout.Interleaved;
        var specs = new List<SafetensorsWriter.TensorSpec>();
        void Add(string name, long[] shape, int? permuteHeads = null) =>
            specs.Add(new(name, shape, dst =>
            {
                fill(name, shape, dst);
                if (permuteHeads is int heads && permute) InterleavedToHalves(dst, heads, config.HeadDim, (int)shape[1]);
            }));

        var c = config;
        Add(TensorNames.Embedding, [c.VocabSize, c.Dim]);
        for (int l = 0; l < c.Layers; l++)
        {
            Add(TensorNames.AttentionNorm(l), [c.Dim]);
            Add(TensorNames.Wq(l), [c.QueryDim, c.Dim], c.Heads);
            Add(TensorNames.Wk(l), [c.KvDim, c.Dim], c.KvHeads);
            Add(TensorNames.Wv(l), [c.KvDim, c.Dim]);
            Add(TensorNames.Wo(l), [c.Dim, c.QueryDim]);
            Add(TensorNames.FfnNorm(l), [c.Dim]);
            Add(TensorNames.Gate(l), [c.HiddenDim, c.Dim]);
            Add(TensorNames.Down(l), [c.Dim, c.HiddenDim]);
            Add(TensorNames.Up(l), [c.HiddenDim, c.Dim]);
        }
        Add(TensorNames.FinalNorm, [c.Dim]);
        if (!c.TiedEmbeddings) Add(TensorNames.Classifier, [c.VocabSize, c.Dim]);
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), specs, type, done => progress?.Invoke(done, specs.Count));
    }

    /// <summary>
    /// Reorders the rows of each head from pairs (2i, 2i+1) to (i, i + d/2): row 2i goes to i and
    /// row 2i+1 to i + d/2, so rotate-half RoPE on the result equals interleaved RoPE on the input.
    /// </summary>
    public static void InterleavedToHalves(Span<float> weight, int heads, int headDim, int cols)
    {
        var head = new float[headDim * cols];
        for (int h = 0; h < heads; h++)
        {
            var block = weight.Slice(h * headDim * cols, headDim * cols);
            block.CopyTo(head);
            for (int i = 0; i < headDim / 2; i++)
            {
                head.AsSpan((2 * i) * cols, cols).CopyTo(block.Slice(i * cols, cols));
                head.AsSpan((2 * i + 1) * cols, cols).CopyTo(block.Slice((i + headDim / 2) * cols, cols));
            }
        }
    }

    public static string ConfigJson(LlamaConfig c, WeightType type)
    {
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["hidden_size"] = c.Dim,
            ["intermediate_size"] = c.HiddenDim,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["num_key_value_heads"] = c.KvHeads,
            ["head_dim"] = c.HeadDim,
            ["hidden_act"] = "silu",
            ["max_position_embeddings"] = c.MaxPositions,
            ["rms_norm_eps"] = c.RmsNormEps,
            ["rope_theta"] = c.RopeTheta,
            ["tie_word_embeddings"] = c.TiedEmbeddings,
            ["vocab_size"] = c.VocabSize,
            ["bos_token_id"] = c.BosId,
            ["eos_token_id"] = c.EosIds.Length == 1 ? c.EosIds[0] : new JsonArray(c.EosIds.Select(i => (JsonNode)i).ToArray()),
            ["attention_bias"] = false,
            ["mlp_bias"] = false,
            ["torch_dtype"] = type switch { WeightType.BF16 => "bfloat16", WeightType.F16 => "float16", _ => "float32" },
        };
        if (c.RopeScaling is { } s)
            o["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = "llama3",
                ["factor"] = s.Factor,
                ["low_freq_factor"] = s.LowFreqFactor,
                ["high_freq_factor"] = s.HighFreqFactor,
                ["original_max_position_embeddings"] = s.OriginalMaxPositions,
            };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
