namespace Cluster.Engine.Model;

/// <summary>
/// Hyper-parameters of a Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama, Mistral without
/// sliding window). Names follow Hugging Face's LlamaConfig where one exists.
/// </summary>
public sealed record LlamaConfig
{
    public required int Dim { get; init; }                 // hidden_size
    public required int HiddenDim { get; init; }           // intermediate_size (SwiGLU width)
    public required int Layers { get; init; }              // num_hidden_layers
    public required int Heads { get; init; }               // num_attention_heads
    public required int KvHeads { get; init; }             // num_key_value_heads (GQA when < Heads)
    public required int VocabSize { get; init; }
    public required int MaxPositions { get; init; }        // training context (max_position_embeddings / seq_len)
    public int? HeadDimOverride { get; init; }             // head_dim when not Dim / Heads
    public float RmsNormEps { get; init; } = 1e-5f;
    public double RopeTheta { get; init; } = 10000.0;
    public Llama3RopeScaling? RopeScaling { get; init; }
    public RopeLayout RopeLayout { get; init; } = RopeLayout.Halves;
    public bool TiedEmbeddings { get; init; }
    public int BosId { get; init; } = 1;
    public int[] EosIds { get; init; } = [2];

    public int HeadDim => HeadDimOverride ?? Dim / Heads;
    public int QueryDim => Heads * HeadDim;
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Parameters the weights hold (the tied classifier counted once).</summary>
    public long ParameterCount =>
        (long)VocabSize * Dim * (TiedEmbeddings ? 1 : 2) + Dim
        + (long)Layers * (2L * Dim + (long)Dim * QueryDim * 2 + (long)Dim * KvDim * 2 + 3L * Dim * HiddenDim);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first inconsistent value.</summary>
    public void Validate()
    {
        void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"{name} must be positive, got {v}");
        }
        Positive(Dim, "hidden_size");
        Positive(HiddenDim, "intermediate_size");
        Positive(Layers, "num_hidden_layers");
        Positive(Heads, "num_attention_heads");
        Positive(KvHeads, "num_key_value_heads");
        Positive(VocabSize, "vocab_size");
        Positive(MaxPositions, "max_position_embeddings");
        if (Heads % KvHeads != 0) throw new ArgumentException($"num_attention_heads ({Heads}) must be a multiple of num_key_value_heads ({KvHeads})");
        if (HeadDimOverride is null && Dim % Heads != 0) throw new ArgumentException($"hidden_size ({Dim}) is not divisible by num_attention_heads ({Heads}) and no head_dim is given");
        if (HeadDim % 2 != 0) throw new ArgumentException($"head_dim must be even for RoPE, got {HeadDim}");
        if (!(RmsNormEps > 0)) throw new ArgumentException($"rms_norm_eps must be positive, got {RmsNormEps}");
        if (!(RopeTheta > 0)) throw new ArgumentException($"rope_theta must be positive, got {RopeTheta}");
    }
}
