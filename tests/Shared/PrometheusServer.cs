using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace Cluster.Tests;

/// <summary>
/// A real `prometheus` (apt) on 127.0.0.1 scraping the given targets every second, with its data in a
/// temporary folder; <see cref="QueryAsync"/> evaluates PromQL through its HTTP API.
/// </summary>
public sealed class PrometheusServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _folder;
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(30) };

    private PrometheusServer(Process process, string folder, int port)
    {
        _process = process;
        _folder = folder;
        Address = new Uri($"http://127.0.0.1:{port}/");
    }

    public Uri Address { get; }

    public static Task<PrometheusServer> StartAsync(IEnumerable<string> targets, CancellationToken ct = default) =>
        StartAsync(new Dictionary<string, IEnumerable<string>> { ["test"] = targets }, ct);

    /// <summary>One scrape job per entry (job name to targets), as deploy/prometheus/prometheus.yml has one per service.</summary>
    public static async Task<PrometheusServer> StartAsync(IReadOnlyDictionary<string, IEnumerable<string>> jobs, CancellationToken ct = default)
    {
        var folder = Path.Combine(Path.GetTempPath(), "llmcluster-prom-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        var config = Path.Combine(folder, "prometheus.yml");
        File.WriteAllText(config, $"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
            {string.Concat(jobs.Select(j => $"  - job_name: {j.Key}\n    static_configs:\n      - targets: [{string.Join(", ", j.Value.Select(t => $"'{t}'"))}]\n"))}
            """);
        int port = FreePorts.Next();
        var psi = new ProcessStartInfo(ExternalCommands.Find("prometheus") ?? "prometheus")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(folder, "data")}", $"--web.listen-address=127.0.0.1:{port}" })
            psi.ArgumentList.Add(a);
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var server = new PrometheusServer(process, folder, port);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                using var r = await server._http.GetAsync(new Uri(server.Address, "-/ready"), ct);
                if (r.IsSuccessStatusCode) return server;
            }
            catch (HttpRequestException) { }
            if (process.HasExited || DateTime.UtcNow > deadline)
            {
                await server.DisposeAsync();
                throw new InvalidOperationException("prometheus did not become ready within 60 s");
            }
            await Task.Delay(200, ct);
        }
    }

    /// <summary>Instant query; returns (labels, value) per series of the result vector.</summary>
    public async Task<List<(Dictionary<string, string> Labels, double Value)>> QueryAsync(string promql, CancellationToken ct = default)
    {
        var url = new Uri(Address, "api/v1/query?query=" + Uri.EscapeDataString(promql));
        using var doc = JsonDocument.Parse(await _http.GetStringAsync(url, ct));
        var data = doc.RootElement.GetProperty("data");
        var result = new List<(Dictionary<string, string>, double)>();
        if (data.GetProperty("resultType").GetString() == "scalar")
        {
            result.Add(([], ParseValue(data.GetProperty("result")[1].GetString()!)));
            return result;
        }
        foreach (var series in data.GetProperty("result").EnumerateArray())
        {
            var labels = series.GetProperty("metric").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
            result.Add((labels, ParseValue(series.GetProperty("value")[1].GetString()!)));
        }
        return result;
    }

    /// <summary>Polls <paramref name="promql"/> until it returns at least one series (scrapes are asynchronous).</summary>
    public async Task<List<(Dictionary<string, string> Labels, double Value)>> WaitForAsync(string promql, TimeSpan timeout, Func<double, bool>? accept = null)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var r = await QueryAsync(promql);
            if (r.Count > 0 && (accept is null || r.Any(x => accept(x.Value)))) return r;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"PromQL '{promql}' returned no matching data within {timeout}");
            await Task.Delay(500);
        }
    }

    private static double ParseValue(string s) => s switch
    {
        "+Inf" => double.PositiveInfinity,
        "-Inf" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ => double.Parse(s, System.Globalization.CultureInfo.InvariantCulture),
    };

    public async ValueTask DisposeAsync()
    {
        try { if (!_process.HasExited) { _process.Kill(entireProcessTree: true); await _process.WaitForExitAsync(); } }
        catch (InvalidOperationException) { }
        _process.Dispose();
        _http.Dispose();
        try { Directory.Delete(_folder, recursive: true); } catch (IOException) { }
    }
}
