using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Cluster.Tests;

namespace Cluster.Sessions.Tests;

/// <summary>
/// A private redis-server (apt redis-server) on a free 127.0.0.1 port, stopped on dispose. With no
/// persistence by default; with <c>appendOnly</c> it writes an AOF in its own temp dir so that a
/// restart keeps the data. When redis-server is missing the test skips by message, unless
/// LLMCLUSTER_REQUIRE_REFERENCES=1 (CI), where it fails.
/// </summary>
public sealed class RedisServerProcess : IAsyncDisposable
{
    // LLMCLUSTER_REDIS_SERVER overrides the path (also a way to check the skip/fail path).
    private static readonly string Binary = Environment.GetEnvironmentVariable("LLMCLUSTER_REDIS_SERVER") ?? "/usr/bin/redis-server";
    private readonly string _dir;
    private readonly string[] _extraArgs;
    private Process? _process;

    private RedisServerProcess(int port, string dir, string[] extraArgs)
    {
        Port = port;
        _dir = dir;
        _extraArgs = extraArgs;
    }

    public int Port { get; }
    /// <summary>A StackExchange.Redis configuration string for this server (append ",password=..." and the like as needed).</summary>
    public string Configuration => $"127.0.0.1:{Port}";

    /// <summary>Starts a server, or returns null (test should return) when redis-server is not installed.</summary>
    public static async Task<RedisServerProcess?> StartOrSkipAsync(bool appendOnly = false, params string[] extraArgs)
    {
        if (!File.Exists(Binary))
        {
            throw References.Missing("redis-server is missing: install apt redis-server to run the Redis tests");
        }
        var dir = Directory.CreateTempSubdirectory("redis-test-").FullName;
        string[] args = appendOnly ? ["--appendonly", "yes", "--appendfsync", "always", .. extraArgs] : ["--appendonly", "no", .. extraArgs];
        var server = new RedisServerProcess(FreePorts.Next(), dir, args);
        await server.StartAsync();
        return server;
    }

    public async Task StartAsync()
    {
        var psi = new ProcessStartInfo(Binary)
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir,
        };
        foreach (var a in new[] { "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--dir", _dir, "--daemonize", "no" }.Concat(_extraArgs))
            psi.ArgumentList.Add(a);
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        // Ready when it accepts a TCP connection (a loaded machine can take a while).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            if (_process.HasExited) throw new InvalidOperationException($"redis-server exited with code {_process.ExitCode}");
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }
        }
    }

    /// <summary>Kills the server process (like a crash: SIGKILL), waiting until it is gone.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill();
            p.WaitForExit(10_000);
        }
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
        return ValueTask.CompletedTask;
    }
}
