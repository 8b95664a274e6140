using Cluster.Tests;

namespace Cluster.Engine.Tests.Model;

/// <summary>Runs the built llmctl (copied beside the tests by the project reference) as a process,
/// so the tests exercise the command line exactly as a user does.</summary>
internal static class Llmctl
{
    public static (int ExitCode, string Stdout, string Stderr) Run(params string[] args) =>
        ExternalTools.Run("dotnet", [Path.Combine(AppContext.BaseDirectory, "llmctl.dll"), .. args], TimeSpan.FromMinutes(5));
}
