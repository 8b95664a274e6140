using System.CommandLine;
using System.Diagnostics;
using Cluster.Serving.Hosting;

namespace LlmCtl.Commands;

/// <summary>
/// `llmctl up`: starts the cluster on this machine as separate processes (a cache manager, N prefill
/// and M decode workers, a gateway), waits until each answers /healthz, prints the endpoints, and
/// stops them all on Ctrl-C.
/// </summary>
internal static class UpCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "model for every worker (default: a generated random-weight model)" };
        var prefill = new Option<int>("--prefill") { Description = "prefill workers", DefaultValueFactory = _ => 1 };
        var decode = new Option<int>("--decode") { Description = "decode workers", DefaultValueFactory = _ => 1 };
        var policy = new Option<string>("--policy") { Description = "default KV policy", DefaultValueFactory = _ => "dense" };
        var redis = new Option<string?>("--redis") { Description = "host:port of Redis for sessions, or 'start' to launch a local redis-server (default: in-process store)" };
        var qfilters = new Option<string?>("--qfilters") { Description = "q_filters file for the qfilters policy" };
        var port = new Option<int>("--port") { Description = "gateway gRPC port", DefaultValueFactory = _ => ServiceRole.Gateway.DefaultGrpcPort() };
        var threads = new Option<int?>("--threads") { Description = "CPU threads per worker" };
        var prefillDevice = new Option<string>("--prefill-device") { Description = "device of the prefill workers: cpu, cuda, cuda:N", DefaultValueFactory = _ => "cpu" };
        var decodeDevice = new Option<string>("--decode-device") { Description = "device of the decode workers: cpu, cuda, cuda:N", DefaultValueFactory = _ => "cpu" };
        var otlp = new Option<string?>("--otlp-endpoint") { Description = "OTLP/HTTP collector for every service's traces (default: trace ids are logged)" };
        var cmd = new Command("up", "start the cluster on this machine as separate processes; Ctrl-C stops it") { model, prefill, decode, policy, redis, qfilters, port, threads, otlp, prefillDevice, decodeDevice };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int np = r.GetValue(prefill), nd = r.GetValue(decode);
            if (np < 1 || nd < 1) throw new ArgumentException("--prefill and --decode need at least 1 worker each");
            var modelPath = ModelSource.ResolvePath(r.GetValue(model)); // generated once here, not by each service
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            // SIGTERM too stops the children (LocalCluster.Dispose) instead of orphaning them.
            using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var cluster = new LocalCluster();
            string[] Common(ServiceRole role)
            {
                var a = new List<string> { "--host", "127.0.0.1" };
                if (role != ServiceRole.CacheManager) a.AddRange(["--model", modelPath]);
                if (r.GetValue(threads) is int t && role is ServiceRole.Prefill or ServiceRole.Decode) a.AddRange(["--threads", t.ToString()]);
                if (r.GetValue(qfilters) is { } q && role is not ServiceRole.Prefill) a.AddRange(["--qfilters", q]);
                if (r.GetValue(otlp) is { } o) a.AddRange(["--otlp-endpoint", o]);
                if (role == ServiceRole.Prefill) a.AddRange(["--device", r.GetValue(prefillDevice)!]);
                if (role == ServiceRole.Decode) a.AddRange(["--device", r.GetValue(decodeDevice)!]);
                return [.. a];
            }
            var cm = cluster.Start(ServiceRole.CacheManager, Common(ServiceRole.CacheManager));
            var prefills = Enumerable.Range(0, np).Select(_ => cluster.Start(ServiceRole.Prefill, [.. Common(ServiceRole.Prefill), "--cache-manager", cm.Grpc])).ToList();
            var decodes = Enumerable.Range(0, nd).Select(_ => cluster.Start(ServiceRole.Decode, [.. Common(ServiceRole.Decode), "--cache-manager", cm.Grpc])).ToList();
            var gatewayArgs = new List<string>(Common(ServiceRole.Gateway))
            {
                "--cache-manager", cm.Grpc,
                "--prefill", string.Join(',', prefills.Select(p => p.Grpc)),
                "--decode", string.Join(',', decodes.Select(d => d.Grpc)),
                "--policy", r.GetValue(policy)!,
            };
            if (r.GetValue(redis) is { } rd) gatewayArgs.AddRange(["--redis", rd == "start" ? cluster.StartRedis() : rd]);
            var gateway = cluster.Start(ServiceRole.Gateway, [.. gatewayArgs], r.GetValue(port));
            cluster.WaitHealthy(TimeSpan.FromMinutes(2), stop.Token);

            Console.WriteLine($"cluster up: gateway {gateway.Grpc} (model {modelPath})");
            foreach (var s in cluster.Services) Console.WriteLine($"  {s.Role.Name(),-12} gRPC {s.Grpc}  metrics {s.Http}/metrics  pid {s.Process.Id}");
            Console.WriteLine($"try: llmctl generate --endpoint {gateway.Grpc} --prompt \"Once upon a time\"; Ctrl-C stops the cluster");
            while (!stop.IsCancellationRequested)
            {
                if (cluster.Services.FirstOrDefault(s => s.Process.HasExited) is { } dead)
                {
                    Console.Error.WriteLine($"{dead.Role.Name()} (pid {dead.Process.Id}) exited with code {dead.Process.ExitCode}; stopping the cluster");
                    return 1;
                }
                stop.Token.WaitHandle.WaitOne(500);
            }
            Console.WriteLine("stopping the cluster");
            return 0;
        }));
        return cmd;
    }
}

/// <summary>Child service processes of `llmctl up`; disposing kills them.</summary>
internal sealed class LocalCluster : IDisposable
{
    public sealed record Service(ServiceRole Role, Process Process, string Grpc, string Http);

    public List<Service> Services { get; } = [];
    private Process? _redis;

    /// <summary>Launches redis-server (apt redis-server) on a free loopback port with append-only
    /// persistence in a temp folder; returns its host:port.</summary>
    public string StartRedis()
    {
        var binary = new[] { "/usr/bin/redis-server", "/usr/local/bin/redis-server" }.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException("--redis start needs redis-server (apt install redis-server)");
        int port = FreePort();
        var dir = Directory.CreateTempSubdirectory("llmcluster-redis-").FullName;
        var psi = new ProcessStartInfo(binary) { UseShellExecute = false, RedirectStandardOutput = true };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--appendonly", "yes", "--dir", dir, "--save", "" }) psi.ArgumentList.Add(a);
        _redis = Process.Start(psi)!;
        _redis.OutputDataReceived += (_, _) => { };
        _redis.BeginOutputReadLine();
        Console.WriteLine($"redis-server on 127.0.0.1:{port} (data in {dir})");
        return $"127.0.0.1:{port}";
    }

    public Service Start(ServiceRole role, string[] args, int? grpcPort = null)
    {
        int grpc = grpcPort ?? FreePort(), http = FreePort();
        var psi = SelfInvocation(["serve", role.Name(), .. args, "--grpc-port", grpc.ToString(), "--http-port", http.ToString()]);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {role.Name()}");
        // Child output is prefixed with its role, so one terminal shows the whole cluster.
        process.OutputDataReceived += (_, e) => { if (e.Data is { } line) Console.WriteLine($"[{role.Name()}] {line}"); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) Console.Error.WriteLine($"[{role.Name()}] {line}"); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var service = new Service(role, process, $"http://127.0.0.1:{grpc}", $"http://127.0.0.1:{http}");
        Services.Add(service);
        return service;
    }

    /// <summary>Polls every service's /healthz until all answer 200.</summary>
    public void WaitHealthy(TimeSpan timeout, CancellationToken ct)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        foreach (var s in Services)
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (s.Process.HasExited) throw new InvalidOperationException($"{s.Role.Name()} exited with code {s.Process.ExitCode} while starting");
                try
                {
                    if (http.GetAsync($"{s.Http}/healthz", ct).GetAwaiter().GetResult().IsSuccessStatusCode) break;
                }
                catch (HttpRequestException) { }
                catch (TaskCanceledException) when (!ct.IsCancellationRequested) { }
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"{s.Role.Name()} did not become healthy within {timeout}");
                Thread.Sleep(200);
            }
        }
    }

    /// <summary>Starts this same llmctl again (as `dotnet llmctl.dll` or the apphost, whichever runs now).</summary>
    private static ProcessStartInfo SelfInvocation(string[] args)
    {
        var exe = Environment.ProcessPath ?? "dotnet";
        var psi = new ProcessStartInfo(exe) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "llmctl.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    private static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        if (_redis is { HasExited: false }) _redis.Kill();
        foreach (var s in Services)
        {
            try { if (!s.Process.HasExited) s.Process.Kill(entireProcessTree: true); s.Process.WaitForExit(5000); }
            catch (InvalidOperationException) { }
            s.Process.Dispose();
        }
    }
}
