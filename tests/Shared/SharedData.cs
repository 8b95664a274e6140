namespace Cluster.Tests;

/// <summary>
/// Locates the read-only data folder (models, corpus) that sits beside the repository as ../shared.
/// <c>.ci/run</c> sets <c>LLMCLUSTER_SHARED</c>; tests that need the data skip with a clear message
/// when it is absent, and never copy it into the repository.
/// </summary>
public static class SharedData
{
    public const string Variable = "LLMCLUSTER_SHARED";

    public static string? Root
    {
        get
        {
            var root = Environment.GetEnvironmentVariable(Variable);
            return !string.IsNullOrEmpty(root) && Directory.Exists(root) ? Path.GetFullPath(root) : null;
        }
    }

    public static string SkipReason =>
        $"{Variable} is not set (or not a folder): point it at the shared/ data folder to run this test (.ci/run does).";

    public static string Path_(params string[] parts) =>
        Path.Combine([Root ?? throw new InvalidOperationException(SkipReason), .. parts]);
}

/// <summary>A fact that needs ../shared; skipped with a reason when LLMCLUSTER_SHARED is missing.</summary>
public sealed class SharedDataFactAttribute : Xunit.SkippableFactAttribute
{
    public SharedDataFactAttribute()
    {
        if (SharedData.Root is null) Skip = SharedData.SkipReason;
    }
}

/// <summary>A theory that needs ../shared; skipped with a reason when LLMCLUSTER_SHARED is missing.</summary>
public sealed class SharedDataTheoryAttribute : Xunit.SkippableTheoryAttribute
{
    public SharedDataTheoryAttribute()
    {
        if (SharedData.Root is null) Skip = SharedData.SkipReason;
    }
}
