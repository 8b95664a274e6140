using System.Diagnostics;

namespace Cluster.Tests;

/// <summary>
/// Runs independent reference programs (Debian's python3 with torch/numpy/sentencepiece/grpcio, node).
/// When <c>LLMCLUSTER_REQUIRE_REFERENCES=1</c> (set by .ci/run, which installs them) a missing tool
/// fails the test; otherwise the test is reported Skipped with the reason (<see cref="References"/>).
/// </summary>
public static class ExternalTools
{
    /// <summary>Debian's interpreter: apt's python3-* packages install into it, not into pyenv's.</summary>
    public const string Python = "/usr/bin/python3";

    public static bool Required => Environment.GetEnvironmentVariable("LLMCLUSTER_REQUIRE_REFERENCES") == "1";

    /// <summary>True when <paramref name="module"/> imports in Debian's python3.</summary>
    public static bool HasPythonModule(string module)
    {
        if (!File.Exists(Python)) return false;
        var (code, _, _) = Run(Python, ["-c", $"import {module}"], TimeSpan.FromSeconds(60));
        return code == 0;
    }

    /// <summary>True, or the test is skipped (locally) or fails (CI) when a python module is missing (<see cref="References"/>).</summary>
    public static bool EnsurePythonModule(string module)
    {
        if (HasPythonModule(module)) return true;
        throw References.Missing($"python3 module '{module}' is missing: install apt python3-{module} to run this check");
    }

    public static (int ExitCode, string Stdout, string Stderr) Run(string file, IEnumerable<string> args, TimeSpan timeout, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {timeout}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The repository root (the folder holding Cluster.sln), found from the test binary.</summary>
    public static string RepoRoot
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Cluster.sln"))) dir = dir.Parent;
            return dir?.FullName ?? throw new InvalidOperationException("Cluster.sln not found above " + AppContext.BaseDirectory);
        }
    }
}
