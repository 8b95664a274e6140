using Cluster.Engine.Kernels;

namespace Cluster.Engine.Synthesis;

/// <summary>
/// The embedded default used when no model is given: a small random-weight model of the "tiny"
/// preset with a byte tokenizer, generated once into the temp folder. Its output is noise; it lets
/// the cluster and the commands run on a fresh machine with nothing downloaded.
/// </summary>
public static class DefaultModel
{
    public const string Preset = "tiny";

    /// <summary>The folder of the default model, generating it on first use. Several processes may
    /// start at once (the cluster's services): each writes to its own folder and renames it into
    /// place, so none reads a half-written checkpoint.</summary>
    public static string EnsurePath()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"llmcluster-default-{Preset}");
        if (File.Exists(Path.Combine(folder, "model.safetensors"))) return folder;
        var staging = $"{folder}.{Environment.ProcessId}.{Guid.NewGuid():N}";
        RandomCheckpoint.Write(staging, ModelPresets.Get(Preset), WeightType.F32, seed: 0);
        try
        {
            Directory.Move(staging, folder);
        }
        catch (IOException) when (File.Exists(Path.Combine(folder, "model.safetensors")))
        {
            Directory.Delete(staging, recursive: true); // another process won the race
        }
        return folder;
    }
}
