namespace Cluster.Tests;

/// <summary>
/// What a test does when a reference tool it compares against (python3 modules, node packages,
/// promtool, kubectl ...) is missing: it is reported Skipped with the reason, so the summary line counts
/// it; with LLMCLUSTER_REQUIRE_REFERENCES=1 (CI, where .ci/run installs them) it fails instead.
/// The test must be a [SkippableFact]/[SkippableTheory] (SharedDataFact and SharedDataTheory are).
/// </summary>
public static class References
{
    /// <summary>Never returns: throws the skip (locally) or the failure (CI; <paramref name="required"/> overrides the environment).</summary>
    public static Exception Missing(string reason, bool? required = null)
    {
        if (required ?? ExternalTools.Required) throw new InvalidOperationException($"{reason} (required: LLMCLUSTER_REQUIRE_REFERENCES=1)");
        throw new Xunit.SkipException(reason);
    }
}
