using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;
using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>One cluster on stories260K for a test class, plus the same model loaded locally for
/// comparison, and a Q-Filters file (random directions: equality between cluster and local does not
/// depend on how good the filters are).</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public string ModelPath => SharedData.Path_("models", "stories260K", "stories260K.bin");
    public TestCluster Cluster { get; private set; } = null!;
    public LlamaModel Local { get; private set; } = null!;
    public ITokenizer Tokenizer { get; private set; } = null!;
    public QFilters Filters { get; private set; } = null!;

    /// <summary>Where <see cref="Filters"/> is saved (for a test that starts its own cluster).</summary>
    public string FiltersPath => Path.Combine(_folder, "qfilters.safetensors");

    private string _folder = "";

    public async Task InitializeAsync()
    {
        if (SharedData.Root is null) return; // the tests skip themselves
        _folder = Directory.CreateTempSubdirectory("llmcluster-it-").FullName;
        Local = ModelLoader.Load(ModelPath);
        Tokenizer = ModelLoader.LoadTokenizer(ModelPath, Local.Config);
        var rng = new Random(5);
        var c = Local.Config;
        Filters = new QFilters(c.Layers, c.KvHeads, c.HeadDim, Enumerable.Range(0, c.Layers * c.KvHeads * c.HeadDim).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
        Filters.Save(FiltersPath);
        Cluster = await TestCluster.StartAsync(ModelPath, qfilters: FiltersPath);
    }

    public async Task DisposeAsync()
    {
        if (Cluster is not null) await Cluster.DisposeAsync();
        Local?.Dispose();
        if (_folder.Length > 0) Directory.Delete(_folder, recursive: true);
    }
}
