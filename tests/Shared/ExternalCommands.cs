using System.Diagnostics;

namespace Cluster.Tests;

/// <summary>Programs from Debian's packages that tests run (promtool, prometheus, redis-server ...).</summary>
public static class ExternalCommands
{
    /// <summary>The full path of <paramref name="command"/> on PATH (or /usr/bin, /usr/sbin), or null.</summary>
    public static string? Find(string command)
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/bin", "/usr/sbin", "/bin"]);
        return dirs.Select(d => Path.Combine(d, command)).FirstOrDefault(File.Exists);
    }

    /// <summary>True, or the test is skipped (locally) or fails (CI, LLMCLUSTER_REQUIRE_REFERENCES=1, where .ci/run
    /// installs <paramref name="aptPackage"/>) when the command is missing.</summary>
    public static bool Ensure(string command, string aptPackage)
    {
        if (Find(command) is not null) return true;
        throw References.Missing($"'{command}' is missing: install apt {aptPackage} to run this check");
    }

    /// <summary>Runs a command with <paramref name="stdin"/> as its standard input.</summary>
    public static (int ExitCode, string Stdout, string Stderr) RunWithInput(string command, IEnumerable<string> args, string stdin, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(Find(command) ?? command)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardInput.Write(stdin);
        p.StandardInput.Close();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{command} did not finish in {timeout}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
