using Cluster.Engine.Compression;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Synthesis;
using Cluster.Engine.Tokenizers;
using Microsoft.Extensions.Logging;

namespace Cluster.Serving.Hosting;

/// <summary>What a service needs of the model: its config and tokenizer (all), its weights (workers)
/// and the policy options (Q-Filters) for parsing KV policies.</summary>
public sealed class ModelHost : IDisposable
{
    private ModelHost(string path, LlamaConfig config, ITokenizer tokenizer, LlamaModel? model, PolicyOptions policies)
    {
        Path = path;
        Config = config;
        Tokenizer = tokenizer;
        Model = model;
        Policies = policies;
    }

    public string Path { get; }
    public LlamaConfig Config { get; }
    public ITokenizer Tokenizer { get; }

    /// <summary>The loaded weights; null for a host that asked for the config only.</summary>
    public LlamaModel? Model { get; }

    public PolicyOptions Policies { get; }

    /// <summary>Loads <c>--model</c> (or the generated default) and <c>--qfilters</c>.</summary>
    public static ModelHost Load(ServiceOptions options, ILogger logger, bool weights)
    {
        var path = options.Model;
        if (string.IsNullOrEmpty(path))
        {
            path = DefaultModel.EnsurePath();
            logger.LogWarning("no --model given: serving a random-weight '{Preset}' model from {Path} (its output is noise)", DefaultModel.Preset, path);
        }
        var config = ModelLoader.ReadConfig(path);
        var tokenizer = ModelLoader.LoadTokenizer(path, config);
        var model = weights ? ModelLoader.Load(path, Cluster.Engine.Kernels.Ilgpu.ComputeBackends.Create(Cluster.Engine.Kernels.Ilgpu.DeviceSpec.Parse(options.Device), options.Threads)) : null;
        QFilters? filters = null;
        if (!string.IsNullOrEmpty(options.QFilters))
        {
            filters = QFilters.Load(options.QFilters);
            if ((filters.Layers, filters.KvHeads, filters.HeadDim) != (config.Layers, config.KvHeads, config.HeadDim))
                throw new ModelFormatException(options.QFilters, $"q_filters are [{filters.Layers}, {filters.KvHeads}, {filters.HeadDim}], the model needs [{config.Layers}, {config.KvHeads}, {config.HeadDim}]");
        }
        logger.LogInformation("model {Path}: {Layers} layers, dim {Dim}, vocab {Vocab}{Backend}", path, config.Layers, config.Dim, config.VocabSize, model is null ? "" : ", " + model.Backend.Name);
        return new ModelHost(path, config, tokenizer, model, new PolicyOptions(filters));
    }

    public void Dispose() => Model?.Dispose();
}
