using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;

namespace Cluster.Engine.Model;

/// <summary>One transformer block's weights; matrices are [out, in].</summary>
public sealed record LayerWeights(
    Tensor AttentionNorm, // [dim]
    Tensor Wq,            // [heads*headDim, dim]
    Tensor Wk,            // [kvHeads*headDim, dim]
    Tensor Wv,            // [kvHeads*headDim, dim]
    Tensor Wo,            // [dim, heads*headDim]
    Tensor FfnNorm,       // [dim]
    Tensor Gate,          // w1 / gate_proj [hidden, dim]
    Tensor Down,          // w2 / down_proj [dim, hidden]
    Tensor Up);           // w3 / up_proj   [hidden, dim]

/// <summary>All weights of a Llama model, resident in one backend.</summary>
public sealed class LlamaWeights : IDisposable
{
    private LlamaWeights(Tensor embedding, LayerWeights[] layers, Tensor finalNorm, Tensor classifier)
    {
        TokenEmbedding = embedding;
        Layers = layers;
        FinalNorm = finalNorm;
        Classifier = classifier;
    }

    public Tensor TokenEmbedding { get; }   // [vocab, dim]
    public LayerWeights[] Layers { get; }
    public Tensor FinalNorm { get; }        // [dim]
    public Tensor Classifier { get; }       // [vocab, dim]; the embedding itself when tied

    /// <summary>Reads every tensor by its Hugging Face name, checking shapes against the config.</summary>
    public static LlamaWeights Load(LlamaConfig c, ICheckpointReader reader, IComputeBackend backend)
    {
        Tensor Get(string name, params long[] shape) => backend.LoadWeights(reader.Read(name, shape));
        var embedding = Get(TensorNames.Embedding, c.VocabSize, c.Dim);
        var layers = new LayerWeights[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            layers[l] = new LayerWeights(
                Get(TensorNames.AttentionNorm(l), c.Dim),
                Get(TensorNames.Wq(l), c.QueryDim, c.Dim),
                Get(TensorNames.Wk(l), c.KvDim, c.Dim),
                Get(TensorNames.Wv(l), c.KvDim, c.Dim),
                Get(TensorNames.Wo(l), c.Dim, c.QueryDim),
                Get(TensorNames.FfnNorm(l), c.Dim),
                Get(TensorNames.Gate(l), c.HiddenDim, c.Dim),
                Get(TensorNames.Down(l), c.Dim, c.HiddenDim),
                Get(TensorNames.Up(l), c.HiddenDim, c.Dim));
        }
        var finalNorm = Get(TensorNames.FinalNorm, c.Dim);
        var classifier = c.TiedEmbeddings ? embedding : Get(TensorNames.Classifier, c.VocabSize, c.Dim);
        return new LlamaWeights(embedding, layers, finalNorm, classifier);
    }

    public void Dispose()
    {
        TokenEmbedding.Dispose();
        FinalNorm.Dispose();
        if (!ReferenceEquals(Classifier, TokenEmbedding)) Classifier.Dispose();
        foreach (var l in Layers)
            foreach (var t in new[] { l.AttentionNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.FfnNorm, l.Gate, l.Down, l.Up })
                t.Dispose();
    }
}
