using Cluster.Tests;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// The Node programs under tests/openai/node (the official OpenAI client, playwright-core), installed by
/// `npm ci --prefix tests/openai/node` from the committed package-lock.json. Missing, a test is reported
/// Skipped with the reason; under LLMCLUSTER_REQUIRE_REFERENCES=1 (CI) it fails instead.
/// </summary>
public static class NodePeers
{
    public static string Folder => Path.Combine(ExternalTools.RepoRoot, "tests", "openai", "node");

    public static void Require(string package, string? command = null)
    {
        string? missing = !File.Exists("/usr/bin/node") ? "node is not installed (apt nodejs)"
            : !Directory.Exists(Path.Combine(Folder, "node_modules", package)) ? $"tests/openai/node/node_modules/{package} is missing: run `npm ci --prefix tests/openai/node`"
            : command is not null && ExternalCommands.Find(command) is null ? $"'{command}' is not installed (apt {command})"
            : null;
        if (missing is null) return;
        if (ExternalTools.Required) throw new InvalidOperationException(missing + " (required: LLMCLUSTER_REQUIRE_REFERENCES=1)");
        Skip.If(true, missing);
    }

    /// <summary>Runs a script of the folder with one JSON argument; returns its stdout, failing on a non-zero exit.</summary>
    public static string Run(string script, string argument, TimeSpan timeout)
    {
        var (code, stdout, stderr) = ExternalTools.Run("/usr/bin/node", [script, argument], timeout, Folder);
        Assert.True(code == 0, $"node {script} exited {code}: {stderr}");
        return stdout;
    }
}
