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
        var model = new Option<string?>("--model") { Description = "model for every worker: llama2.c .bin (or a folder holding one), Hugging Face folder (default: a generated random-weight model)" };
        var prefill = new Option<int>("--prefill") { Description = "prefill workers", DefaultValueFactory = _ => 1 };
        var decode = new Option<int>("--decode") { Description = "decode workers", DefaultValueFactory = _ => 1 };
        var policy = new Option<string>("--policy") { Description = "default KV policy", DefaultValueFactory = _ => "dense" };
        var redis = new Option<string?>("--redis") { Description = "host:port of Redis for sessions, or 'start' to launch a local redis-server (default: in-process store)" };
        var qfilters = new Option<string?>("--qfilters") { Description = "q_filters file for the qfilters policy" };
        var host = new Option<string>("--host") { Description = "address every service binds (0.0.0.0: reachable from other machines)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int?>("--port") { Description = $"gateway gRPC port (default {ServiceRole.Gateway.DefaultGrpcPort()} + --port-offset)" };
        var httpPort = new Option<int?>("--http-port") { Description = $"gateway HTTP port: OpenAI-compatible API, playground, /metrics (default {ServiceRole.Gateway.DefaultHttpPort()} + --port-offset)" };
        var portOffset = new Option<int>("--port-offset") { Description = "added to every default port, e.g. 1000 for a second cluster beside the first (worker k of a kind: its kind's ports + 100 k)", DefaultValueFactory = _ => 0 };
        var threads = new Option<int?>("--threads") { Description = "CPU threads per worker" };
        var prefillDevice = new Option<string>("--prefill-device") { Description = "device of the prefill workers: cpu, cuda, cuda:N", DefaultValueFactory = _ => "cpu" };
        var decodeDevice = new Option<string>("--decode-device") { Description = "device of the decode workers: cpu, cuda, cuda:N", DefaultValueFactory = _ => "cpu" };
                var chatTemplate = new Option<string?>("--chat-template") { Description = "chat template (file or text) for models that have none" };
        var logLevel = new Option<string>("--log-level") { Description = "services' log level: trace, debug, info, warning, error, none", DefaultValueFactory = _ => "warning" };
        var otlp = new Option<string?>("--otlp-endpoint") { Description = "OTLP/HTTP collector for every service's traces (default: trace ids are logged)" };
        var kvSpill = new Option<string?>("--kv-spill") { Description = "directory where the cache manager spills KV it evicts and everything it holds at shutdown, and reloads it from after a restart" };
        var kvDtype = new Option<string>("--kv-dtype") { Description = "KV precision the workers send and the cache manager stores: fp32 (tokens as a local run), bf16 or fp16 (half the bytes)", DefaultValueFactory = _ => "fp32" };
        var weights = ModelSource.WeightsOption();
        var cmd = new Command("up", "start the cluster on this machine as separate processes; Ctrl-C stops it")
            { model, prefill, decode, policy, redis, qfilters, host, port, httpPort, portOffset, threads, chatTemplate, logLevel, otlp, weights, prefillDevice, decodeDevice, kvSpill, kvDtype };
        cmd.SetAction(r => CommandErrors.Run(() =>
        {
            int np = r.GetValue(prefill), nd = r.GetValue(decode), offset = r.GetValue(portOffset);
            if (np < 1 || nd < 1) throw new ArgumentException("--prefill and --decode need at least 1 worker each");
            string bind = r.GetValue(host)!;
            ServiceLogging.Parse(r.GetValue(logLevel)!);
            var precision = Cluster.Engine.KvCache.KvPrecisions.Parse(r.GetValue(kvDtype)); // refused here, before any service starts
            var modelPath = ModelSource.ResolvePath(r.GetValue(model)); // generated once here, not by each service
            // A bad model is refused here, in one line, before any service starts.
            var config = Cluster.Engine.Loaders.ModelLoader.ReadConfig(modelPath);
            Cluster.Engine.Loaders.ModelLoader.LoadTokenizer(modelPath, config);

            // Fixed ports (docs/SERVICES.md), checked before anything starts so a clash names its option.
            var ports = new LocalCluster.PortPlan(bind, offset, r.GetValue(port), r.GetValue(httpPort), np, nd);
            ports.EnsureFree();

            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            // SIGTERM too stops the children (LocalCluster.Dispose) instead of orphaning them.
            using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var cluster = new LocalCluster(bind);
            string[] Common(ServiceRole role)
            {
                var a = new List<string> { "--host", bind, "--log-level", r.GetValue(logLevel)! };
                if (role != ServiceRole.CacheManager) a.AddRange(["--model", modelPath]);
                if (r.GetValue(threads) is int t && role is ServiceRole.Prefill or ServiceRole.Decode) a.AddRange(["--threads", t.ToString()]);
                if (r.GetValue(weights) is { } w && role is ServiceRole.Prefill or ServiceRole.Decode) a.AddRange(["--weights", w]); // same kernels as local runs
                if (r.GetValue(qfilters) is { } q) a.AddRange(["--qfilters", q]); // prefill compresses before sending
                if (r.GetValue(otlp) is { } o) a.AddRange(["--otlp-endpoint", o]);
                if (role is ServiceRole.Prefill or ServiceRole.Decode) a.AddRange(["--kv-dtype", Cluster.Engine.KvCache.KvPrecisions.Name(precision)]);
                if (role == ServiceRole.Prefill) a.AddRange(["--device", r.GetValue(prefillDevice)!]);
                if (role == ServiceRole.Decode) a.AddRange(["--device", r.GetValue(decodeDevice)!]);
                if (role == ServiceRole.CacheManager && r.GetValue(kvSpill) is { } spill) a.AddRange(["--kv-spill", Path.GetFullPath(spill)]);
                return [.. a];
            }
            var cm = cluster.Start(ServiceRole.CacheManager, Common(ServiceRole.CacheManager), ports.For(ServiceRole.CacheManager, 0));
            var prefills = Enumerable.Range(0, np).Select(k => cluster.Start(ServiceRole.Prefill, [.. Common(ServiceRole.Prefill), "--cache-manager", cm.Grpc], ports.For(ServiceRole.Prefill, k))).ToList();
            var decodes = Enumerable.Range(0, nd).Select(k => cluster.Start(ServiceRole.Decode, [.. Common(ServiceRole.Decode), "--cache-manager", cm.Grpc], ports.For(ServiceRole.Decode, k))).ToList();
            var gatewayArgs = new List<string>(Common(ServiceRole.Gateway))
            {
                "--cache-manager", cm.Grpc,
                "--prefill", string.Join(',', prefills.Select(p => p.Grpc)),
                "--decode", string.Join(',', decodes.Select(d => d.Grpc)),
                "--policy", r.GetValue(policy)!,
            };
            if (r.GetValue(chatTemplate) is { } ct) gatewayArgs.AddRange(["--chat-template", ct]);
            if (r.GetValue(redis) is { } rd) gatewayArgs.AddRange(["--redis", rd == "start" ? cluster.StartRedis() : rd]);
            // The gateway starts once its workers answer, so that its first connections to them succeed
            // and "ready" means a request is served (a connection refused at start left the gateway's
            // channel failing calls until its next reconnect attempt).
            cluster.WaitHealthy(TimeSpan.FromMinutes(2), stop.Token);
            var gateway = cluster.Start(ServiceRole.Gateway, [.. gatewayArgs], ports.For(ServiceRole.Gateway, 0));
            cluster.WaitHealthy(TimeSpan.FromMinutes(2), stop.Token);

            string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath));
            Console.WriteLine($"cluster up: model {name}, context {config.MaxPositions}, default KV policy {r.GetValue(policy)}");
            Console.WriteLine($"  gRPC        {gateway.Grpc}   e.g. llmctl generate --endpoint {gateway.Grpc} --prompt \"Once upon a time\"");
            Console.WriteLine($"  HTTP API    {gateway.Http}/v1  (OpenAI-compatible: /v1/models, /v1/completions, /v1/chat/completions)");
            Console.WriteLine($"  playground  {gateway.Http}/");
            Console.WriteLine($"  metrics     {string.Join(", ", cluster.Services.Select(s => $"{s.Http}/metrics"))}");
            Console.WriteLine("Ctrl-C stops the cluster");
            // Supervision: a service that dies is started again on its ports (after a backoff), not a reason
            // to stop the others; the cache manager comes back empty and the workers rebuild what it lost.
            var supervisor = new ServiceSupervisor(cluster);
            while (!stop.IsCancellationRequested)
            {
                supervisor.Check();
                stop.Token.WaitHandle.WaitOne(500);
            }
            Console.WriteLine("stopping the cluster");
            return 0;
        }));
        return cmd;
    }
}

/// <summary>Child service processes of `llmctl up`; disposing stops them (gracefully, then by force).</summary>
internal sealed class LocalCluster(string bind) : IDisposable
{
    public sealed record Service(ServiceRole Role, Process Process, string Grpc, string Http)
    {
        /// <summary>The current process: a restart replaces it (same role, arguments and ports).</summary>
        public Process Process { get; set; } = Process;

        internal ProcessStartInfo StartInfo { get; init; } = null!;
    }

    /// <summary>The address clients use: a 0.0.0.0 bind is reached on loopback.</summary>
    private readonly string _reach = bind is "0.0.0.0" or "::" ? "127.0.0.1" : bind;

    /// <summary>
    /// Every service's ports: its kind's defaults (docs/SERVICES.md) + the offset, + 100 k for the k-th
    /// worker of a kind; the gateway's may be set outright (--port, --http-port).
    /// </summary>
    public sealed record PortPlan(string Host, int Offset, int? GatewayGrpc, int? GatewayHttp, int Prefills, int Decodes)
    {
        public (int Grpc, int Http) For(ServiceRole role, int k) => role == ServiceRole.Gateway
            ? (GatewayGrpc ?? role.DefaultGrpcPort() + Offset, GatewayHttp ?? role.DefaultHttpPort() + Offset)
            : (role.DefaultGrpcPort() + Offset + 100 * k, role.DefaultHttpPort() + Offset + 100 * k);

        /// <summary>Throws naming the port, its service and the option that moves it when one is taken.</summary>
        public void EnsureFree()
        {
            var all = new List<(int Port, string What, string Option)>
            {
                (For(ServiceRole.Gateway, 0).Grpc, "the gateway's gRPC port", GatewayGrpc is null ? "--port or --port-offset" : "--port"),
                (For(ServiceRole.Gateway, 0).Http, "the gateway's HTTP port", GatewayHttp is null ? "--http-port or --port-offset" : "--http-port"),
            };
            foreach (var (role, count) in new[] { (ServiceRole.CacheManager, 1), (ServiceRole.Prefill, Prefills), (ServiceRole.Decode, Decodes) })
                for (int k = 0; k < count; k++)
                {
                    var (g, h) = For(role, k);
                    all.Add((g, $"{role.Name()} {k}'s gRPC port", "--port-offset"));
                    all.Add((h, $"{role.Name()} {k}'s HTTP port", "--port-offset"));
                }
            var address = System.Net.IPAddress.Parse(Host);
            foreach (var (p, what, option) in all)
            {
                if (p is < 1 or > 65535) throw new ArgumentException($"{what} would be {p}, outside 1-65535: change {option}");
                try
                {
                    using var probe = new System.Net.Sockets.TcpListener(address, p);
                    probe.Start();
                }
                catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse)
                {
                    throw new ArgumentException($"port {p} on {Host} ({what}) is already in use: stop what holds it, or choose other ports with {option}");
                }
            }
        }
    }

    public List<Service> Services { get; } = [];
    private readonly HashSet<Service> _ready = new(ReferenceEqualityComparer.Instance);
    private Process? _redis;

    /// <summary>The redis-server <see cref="StartRedis"/> launched, if any (benchmarks watch its memory).</summary>
    public Process? RedisProcess => _redis;

    /// <summary>Where the services' output lines go (role, line, from stderr); default: this console, prefixed with the role.</summary>
    public Action<ServiceRole, string, bool>? Output { get; init; }

    /// <summary>Launches redis-server (apt redis-server) on a free loopback port with append-only
    /// persistence in a temp folder; returns its host:port.</summary>
    public string StartRedis()
    {
        int port = FreePort();
        var dir = Directory.CreateTempSubdirectory("llmcluster-redis-").FullName;
        _redis = StartRedisServer(port, dir, fsyncAlways: false);
        Console.WriteLine($"redis-server on 127.0.0.1:{port} (data in {dir})");
        return $"127.0.0.1:{port}";
    }

    /// <summary>redis-server (apt redis-server) on 127.0.0.1:<paramref name="port"/> with append-only
    /// persistence in <paramref name="dir"/>, fsynced every second or, with <paramref name="fsyncAlways"/>,
    /// on every write (nothing acknowledged is lost when it is killed).</summary>
    internal static Process StartRedisServer(int port, string dir, bool fsyncAlways)
    {
        var binary = new[] { "/usr/bin/redis-server", "/usr/local/bin/redis-server" }.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException("redis-server is needed here (apt install redis-server)");
        var psi = new ProcessStartInfo(binary) { UseShellExecute = false, RedirectStandardOutput = true };
        foreach (var a in new[] { "--port", port.ToString(), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", fsyncAlways ? "always" : "everysec", "--dir", dir, "--save", "" })
            psi.ArgumentList.Add(a);
        var redis = Process.Start(psi)!;
        redis.OutputDataReceived += (_, _) => { };
        redis.BeginOutputReadLine();
        return redis;
    }

    public Service Start(ServiceRole role, string[] args, (int Grpc, int Http) ports)
    {
        var (grpc, http) = ports;
        var psi = SelfInvocation(["serve", role.Name(), .. args, "--grpc-port", grpc.ToString(), "--http-port", http.ToString()]);
        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        foreach (var (name, value) in ServiceRuntime.Environment(role)) psi.Environment[name] = value;
        var service = new Service(role, Launch(role, psi), $"http://{_reach}:{grpc}", $"http://{_reach}:{http}") { StartInfo = psi };
        Services.Add(service);
        return service;
    }

    /// <summary>Starts a dead service again with its arguments and ports.</summary>
    public void Restart(Service service)
    {
        service.Process.Dispose();
        service.Process = Launch(service.Role, service.StartInfo);
    }

    private Process Launch(ServiceRole role, ProcessStartInfo psi)
    {
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {role.Name()}");
        // Child output is prefixed with its role, so one terminal shows the whole cluster; the child's own
        // "serving" line is left out (WaitHealthy prints one line per service when it is ready).
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not { } line || line.StartsWith($"{role.Name()} serving gRPC on", StringComparison.Ordinal)) return;
            if (Output is { } output) output(role, line, false);
            else Console.WriteLine($"[{role.Name()}] {line}");
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not { } line) return;
            if (Output is { } output) output(role, line, true);
            else Console.Error.WriteLine($"[{role.Name()}] {line}");
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    /// <summary>Polls the /healthz of every service not yet seen ready until all answer 200, printing one
    /// line as each is ready (so it can be called again after starting more).</summary>
    public void WaitHealthy(TimeSpan timeout, CancellationToken ct)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        foreach (var s in Services)
        {
            if (_ready.Contains(s)) continue;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (s.Process.HasExited) throw new InvalidOperationException($"{s.Role.Name()} exited with code {s.Process.ExitCode} while starting");
                try
                {
                    if (http.GetAsync($"{s.Http}/healthz", ct).GetAwaiter().GetResult().IsSuccessStatusCode)
                    {
                        Console.WriteLine($"  {s.Role.Name(),-12} ready  {s.Grpc}  (pid {s.Process.Id})");
                        _ready.Add(s);
                        break;
                    }
                }
                catch (HttpRequestException) { }
                catch (TaskCanceledException) when (!ct.IsCancellationRequested) { }
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"{s.Role.Name()} did not become healthy within {timeout}");
                Thread.Sleep(200);
            }
        }
    }

    /// <summary>Starts this same llmctl again (as `dotnet llmctl.dll` or the apphost, whichever runs now).</summary>
    internal static ProcessStartInfo SelfInvocation(string[] args)
    {
        var exe = Environment.ProcessPath ?? "dotnet";
        var psi = new ProcessStartInfo(exe) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(exe) == "dotnet") psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "llmctl.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }

    internal static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>How long a service may take to drain and exit after SIGTERM before it is killed.</summary>
    private static readonly TimeSpan GracefulStop = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Stops the services front to back: SIGTERM (each drains: in-flight calls finish, readiness goes
    /// NOT_SERVING, the cache manager writes its KV to --kv-spill), then SIGKILL for what is still
    /// running after <see cref="GracefulStop"/>. The gateway goes first so that no new work arrives,
    /// the cache manager last so that the workers' final checkpoints still land.
    /// </summary>
    public void Dispose()
    {
        var order = Services.OrderBy(s => s.Role == ServiceRole.Gateway ? 0 : s.Role == ServiceRole.CacheManager ? 2 : 1).ToList();
        foreach (var wave in order.GroupBy(s => s.Role == ServiceRole.Gateway ? 0 : s.Role == ServiceRole.CacheManager ? 2 : 1))
        {
            foreach (var s in wave) Terminate(s.Process);
            foreach (var s in wave)
            {
                try
                {
                    if (!s.Process.WaitForExit(GracefulStop)) s.Process.Kill(entireProcessTree: true);
                    s.Process.WaitForExit(5000);
                }
                catch (InvalidOperationException) { }
            }
        }
        foreach (var s in Services) s.Process.Dispose();
        if (_redis is { HasExited: false }) _redis.Kill();
    }

    private static void Terminate(Process p)
    {
        try
        {
            if (p.HasExited) return;
            if (OperatingSystem.IsWindows()) p.Kill(entireProcessTree: true);
            else if (SendSignal(p.Id, 15) != 0) p.Kill(entireProcessTree: true); // SIGTERM, or kill if that fails
        }
        catch (InvalidOperationException) { }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);
}
