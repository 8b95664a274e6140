using Cluster.Tests;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Cluster.IntegrationTests;

/// <summary>A service executable (copied beside the tests by the project reference) running as its own
/// process, so a test can kill it with SIGKILL as a crash would.</summary>
public sealed class ServiceProcess : IDisposable
{
    private readonly Process _process;
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(2) };

    private ServiceProcess(Process process, int grpc, int http)
    {
        _process = process;
        GrpcAddress = $"http://127.0.0.1:{grpc}";
        HttpAddress = $"http://127.0.0.1:{http}";
    }

    public string GrpcAddress { get; }
    public string HttpAddress { get; }

    /// <summary>
    /// Starts <paramref name="assembly"/> on two free ports and waits until it is healthy. A port can be
    /// taken between FreePorts choosing it and the service binding it (another test's outgoing
    /// connection gets it as its local port): a service that exits saying a port is in use is started
    /// again on new ports, up to three times; any other exit fails with what the service printed.
    /// </summary>
    public static async Task<ServiceProcess> StartAsync(string assembly, params string[] args)
    {
        for (int attempt = 1; ; attempt++)
        {
            var (service, stderr) = await TryStartAsync(assembly, args);
            if (service is not null) return service;
            if (attempt == 3 || !stderr.Contains("already in use", StringComparison.Ordinal))
                throw new InvalidOperationException($"{assembly} exited: {stderr}");
        }
    }

    private static async Task<(ServiceProcess? Service, string Stderr)> TryStartAsync(string assembly, string[] args)
    {
        int grpc = FreePorts.Next(), http = FreePorts.Next();
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, assembly), "--host", "127.0.0.1", "--grpc-port", grpc.ToString(), "--http-port", http.ToString() }.Concat(args))
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        var stderr = new System.Text.StringBuilder();
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var service = new ServiceProcess(process, grpc, http);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            if (process.HasExited)
            {
                process.WaitForExit(); // the rest of its output
                lock (stderr) return (null, $"code {process.ExitCode}: {stderr.ToString().Trim()}");
            }
            try
            {
                if ((await Http.GetAsync($"{service.HttpAddress}/healthz")).IsSuccessStatusCode) return (service, "");
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{assembly} not healthy within 60 s");
            await Task.Delay(100);
        }
    }

    /// <summary>The value of an unlabelled gauge or counter on its /metrics page (0 while absent: a
    /// counter appears with its first increment).</summary>
    public async Task<double> GaugeAsync(string name)
    {
        var text = await Http.GetStringAsync($"{HttpAddress}/metrics");
        // The exporter writes an unlabelled series as "name{} value".
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(name + " ", StringComparison.Ordinal) || l.StartsWith(name + "{} ", StringComparison.Ordinal))
;
        return line is null ? 0 : double.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The process's resident memory now (VmRSS) and its peak so far (VmHWM), in bytes.</summary>
    public (long Rss, long Peak) Memory()
    {
        long Field(string[] lines, string name) =>
            long.Parse(lines.First(l => l.StartsWith(name + ":", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        var lines = File.ReadAllLines($"/proc/{_process.Id}/status");
        return (Field(lines, "VmRSS"), Field(lines, "VmHWM"));
    }

    /// <summary>SIGKILL, as a crash: no shutdown, open streams are cut.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
