namespace Cluster.Engine.Loaders;

/// <summary>A checkpoint or config file that cannot be used: the message names the file and the problem.</summary>
public sealed class ModelFormatException(string path, string problem)
    : Exception($"{path}: {problem}")
{
    public string FilePath { get; } = path;
    public string Problem { get; } = problem;
}
