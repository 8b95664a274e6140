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
    private readonly WeightStore _store;

    private LlamaWeights(Tensor embedding, LayerWeights[] layers, Tensor finalNorm, Tensor classifier, WeightStore store)
    {
        TokenEmbedding = embedding;
        Layers = layers;
        FinalNorm = finalNorm;
        Classifier = classifier;
        _store = store;
    }

    /// <summary>Format of the layer matrices (the embedding and classifier use it too).</summary>
    public WeightType MatrixFormat { get; private init; }

    /// <summary>Weight bytes one decode step reads: every layer matrix and norm, the final norm and
    /// the classifier in their kept formats (the embedding lookup reads one row, counted as nothing).</summary>
    public long DecodeBytesPerToken { get; private init; }

    /// <summary>Host bytes still held by weights converted at load (matrices a backend reads in place;
    /// none for Q8_0 on the CPU, which the backend repacks and the store then frees).</summary>
    public long ConvertedBytes => _store.Bytes;

    public Tensor TokenEmbedding { get; }   // [vocab, dim]
    public LayerWeights[] Layers { get; }
    public Tensor FinalNorm { get; }        // [dim]
    public Tensor Classifier { get; }       // [vocab, dim]; the embedding itself when tied

    /// <summary>
    /// Reads every tensor by its Hugging Face name, checking shapes against the config. Matrices are
    /// kept in <paramref name="format"/> (converted once here), or as stored when null; a stored
    /// format the kernels cannot multiply (Q4_0, Q4_K, Q6_K) becomes Q8_0. Norm vectors are fp32.
    /// </summary>
    public static LlamaWeights Load(LlamaConfig c, ICheckpointReader reader, IComputeBackend backend, WeightType? format = null)
    {
        var store = new WeightStore();
        long bytes = 0;
        Tensor Vector(string name, long n)
        {
            var data = store.Convert(reader.Read(name, [n]), WeightType.F32);
            bytes += data.ByteLength;
            return backend.LoadWeights(data);
        }
        Tensor Matrix(string name, long rows, long cols, bool counted = true)
        {
            var stored = reader.Read(name, [rows, cols]);
            var target = format ?? (WeightLayout.HasKernels(stored.Type) ? stored.Type : WeightType.Q8_0);
            var data = store.Convert(stored, target);
            if (counted) bytes += data.ByteLength;
            var tensor = backend.LoadWeights(data);
            if (!backend.ReadsSource(tensor)) store.Release(data);
            return tensor;
        }
        try
        {
            var embedding = Matrix(TensorNames.Embedding, c.VocabSize, c.Dim, counted: c.TiedEmbeddings);
            var layers = new LayerWeights[c.Layers];
            for (int l = 0; l < c.Layers; l++)
            {
                layers[l] = new LayerWeights(
                    Vector(TensorNames.AttentionNorm(l), c.Dim),
                    Matrix(TensorNames.Wq(l), c.QueryDim, c.Dim),
                    Matrix(TensorNames.Wk(l), c.KvDim, c.Dim),
                    Matrix(TensorNames.Wv(l), c.KvDim, c.Dim),
                    Matrix(TensorNames.Wo(l), c.Dim, c.QueryDim),
                    Vector(TensorNames.FfnNorm(l), c.Dim),
                    Matrix(TensorNames.Gate(l), c.HiddenDim, c.Dim),
                    Matrix(TensorNames.Down(l), c.Dim, c.HiddenDim),
                    Matrix(TensorNames.Up(l), c.HiddenDim, c.Dim));
            }
            var finalNorm = Vector(TensorNames.FinalNorm, c.Dim);
            var classifier = c.TiedEmbeddings ? embedding : Matrix(TensorNames.Classifier, c.VocabSize, c.Dim);
            var main = layers.Length > 0 ? layers[0].Wq.Format : classifier.Format;
            return new LlamaWeights(embedding, layers, finalNorm, classifier, store) { MatrixFormat = main, DecodeBytesPerToken = bytes };
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        TokenEmbedding.Dispose();
        FinalNorm.Dispose();
        if (!ReferenceEquals(Classifier, TokenEmbedding)) Classifier.Dispose();
        foreach (var l in Layers)
            foreach (var t in new[] { l.AttentionNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.FfnNorm, l.Gate, l.Down, l.Up })
                t.Dispose();
        _store.Dispose();
    }
}
