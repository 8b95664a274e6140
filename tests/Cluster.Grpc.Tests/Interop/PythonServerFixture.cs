using System.Collections.Concurrent;
using System.Diagnostics;
using Cluster.Tests;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>grpcio's server (tests/interop/python/interop_server.py) on 127.0.0.1 with a free port.</summary>
public sealed class PythonServerFixture : IAsyncLifetime
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _cancelled = new();
    private Process? _process;

    /// <summary>0 when grpcio is missing locally (the tests return early).</summary>
    public int Port { get; private set; }

    public Task CancelledAsync(string callId) => Signal(callId).Task;

    public async Task InitializeAsync()
    {
        if (PythonStubs.Get() is not { } stubs) return;
        var psi = new ProcessStartInfo(ExternalTools.Python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(PythonStubs.ScriptsDir, "interop_server.py"));
        psi.ArgumentList.Add(stubs);
        _process = Process.Start(psi)!;
        var port = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) { port.TrySetException(new InvalidOperationException("python server exited")); return; }
            var parts = e.Data.Split(' ', 2);
            if (parts[0] == "PORT") port.TrySetResult(int.Parse(parts[1]));
            else if (parts[0] == "CANCELLED") Signal(parts[1]).TrySetResult();
        };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        Port = await port.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    public Task DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.StandardInput.Close(); // the server stops when stdin closes
            if (!_process.WaitForExit(5000)) _process.Kill(entireProcessTree: true);
        }
        _process?.Dispose();
        return Task.CompletedTask;
    }

    private TaskCompletionSource Signal(string id) => _cancelled.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
}
