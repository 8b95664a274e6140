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
        var model = weights ? LoadWeights(path, options) : null;
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

    /// <summary>Files at least this large say when their loading starts and ends (it can take minutes).</summary>
    public const long BigModelBytes = 1L << 30;

    /// <summary>Loads the weights; a big checkpoint prints a line before and after (whatever the log level:
    /// a silent minute looks like a hang).</summary>
    private static LlamaModel LoadWeights(string path, ServiceOptions options)
    {
        // The weights as stored, or converted at load (--weights q8_0|bf16|fp16|fp32): the kernels are the
        // same as `llmctl generate --local --weights`, so local and cluster tokens stay identical.
        LlamaModel Load() => ModelLoader.Load(path, Cluster.Engine.Kernels.Ilgpu.ComputeBackends.Create(Cluster.Engine.Kernels.Ilgpu.DeviceSpec.Parse(options.Device), options.Threads), weights: WeightLayout.ParseOption(options.Weights));
        long bytes = CheckpointBytes(path);
        if (bytes < BigModelBytes) return Load();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Console.WriteLine($"{options.Role.Name()}: loading {bytes / (double)(1L << 30):F1} GiB of weights from {path} ...");
        var model = Load();
        Console.WriteLine($"{options.Role.Name()}: weights loaded in {clock.Elapsed.TotalSeconds:F1} s ({bytes / (double)(1L << 20) / Math.Max(clock.Elapsed.TotalSeconds, 1e-3):F0} MiB/s)");
        return model;
    }

    /// <summary>The size of a checkpoint file, or of a folder's weight files.</summary>
    public static long CheckpointBytes(string path) => File.Exists(path)
        ? new FileInfo(path).Length
        : Directory.EnumerateFiles(path).Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".bin", StringComparison.Ordinal)).Sum(f => new FileInfo(f).Length);

    public void Dispose() => Model?.Dispose();
}
