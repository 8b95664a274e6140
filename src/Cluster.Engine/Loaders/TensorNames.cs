namespace Cluster.Engine.Loaders;

/// <summary>Hugging Face LlamaForCausalLM tensor names, the canonical names every reader answers to.</summary>
public static class TensorNames
{
    public const string Embedding = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string Classifier = "lm_head.weight";

    public static string AttentionNorm(int l) => $"model.layers.{l}.input_layernorm.weight";
    public static string Wq(int l) => $"model.layers.{l}.self_attn.q_proj.weight";
    public static string Wk(int l) => $"model.layers.{l}.self_attn.k_proj.weight";
    public static string Wv(int l) => $"model.layers.{l}.self_attn.v_proj.weight";
    public static string Wo(int l) => $"model.layers.{l}.self_attn.o_proj.weight";
    public static string FfnNorm(int l) => $"model.layers.{l}.post_attention_layernorm.weight";
    public static string Gate(int l) => $"model.layers.{l}.mlp.gate_proj.weight";
    public static string Down(int l) => $"model.layers.{l}.mlp.down_proj.weight";
    public static string Up(int l) => $"model.layers.{l}.mlp.up_proj.weight";
}
