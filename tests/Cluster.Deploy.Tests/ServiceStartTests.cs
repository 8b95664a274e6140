using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using Xunit;

namespace Cluster.Deploy.Tests;

/// <summary>
/// The four service binaries, started as processes on this machine with the environment that
/// docker-compose.yml or the manifests give their containers, answer /healthz with 200. Only what
/// cannot hold here is changed: ports become free local ports (LLM_GRPC_PORT/LLM_HTTP_PORT, and the
/// addresses that name them), service host names become 127.0.0.1, and LLM_MODEL is emptied because
/// its /models path exists only in a container (empty is also what both deployments give by default:
/// the services then generate a random model). The Helm chart cannot be rendered without helm, so
/// it is covered by HelmChartTests instead.
/// </summary>
public class ServiceStartTests
{
    [SkippableFact]
    public Task Services_start_with_the_compose_environment() =>
        StartAllAsync("docker-compose.yml", Contract.Roles.ToDictionary(r => r, r => Compose.Environment(Compose.Services(Compose.Load())[r.Name()].Map(r.Name()))));

    [SkippableFact]
    public Task Services_start_with_the_manifests_environment() =>
        Kubernetes.Render() is { } k8s
            ? StartAllAsync("manifests", Contract.Roles.ToDictionary(r => r, r => k8s.Environment(Kubernetes.Container(k8s.Deployment(r)))))
            : Task.CompletedTask;

    private static async Task StartAllAsync(string source, Dictionary<ServiceRole, Dictionary<string, string?>> deployed)
    {
        var ports = Contract.Roles.ToDictionary(r => r, _ => (Grpc: FreePorts.Next(), Http: FreePorts.Next()));
        var redisPort = FreePorts.Next();
        var processes = new List<(ServiceRole Role, Process Process, StringBuilder Output)>();
        Process? redis = null;
        try
        {
            // A real Redis where one is installed, in case the gateway checks its store at start.
            if (ExternalCommands.Find("redis-server") is { } redisServer)
                redis = Start(redisServer, ["--port", redisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], new(), new StringBuilder());
            foreach (var role in Contract.Roles)
            {
                var env = Remap(deployed[role], role, ports, redisPort);
                var output = new StringBuilder();
                var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
                processes.Add((role, Start(dotnet, [ServiceDll(role)], env, output), output));
            }
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            foreach (var (role, process, output) in processes)
            {
                var url = $"http://127.0.0.1:{ports[role].Http}{Contract.HealthPath}";
                var deadline = DateTime.UtcNow.AddSeconds(90);
                HttpStatusCode? status = null;
                while (status != HttpStatusCode.OK)
                {
                    Assert.False(process.HasExited, $"{source}: {role.Name()} exited with {(process.HasExited ? process.ExitCode : 0)}:\n{output}");
                    Assert.True(DateTime.UtcNow < deadline, $"{source}: {role.Name()} {url} answered {status?.ToString() ?? "nothing"} within 90 s:\n{output}");
                    try { status = (await http.GetAsync(url)).StatusCode; }
                    catch (HttpRequestException) { }
                    catch (TaskCanceledException) { }
                    if (status != HttpStatusCode.OK) await Task.Delay(250);
                }
            }
        }
        finally
        {
            foreach (var p in processes.Select(p => p.Process).Append(redis).OfType<Process>())
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
                p.WaitForExit(10_000);
                p.Dispose();
            }
        }
    }

    /// <summary>The deployed environment with ports and host names made local (see the class summary).</summary>
    private static Dictionary<string, string?> Remap(Dictionary<string, string?> deployed, ServiceRole role,
        Dictionary<ServiceRole, (int Grpc, int Http)> ports, int redisPort)
    {
        var env = new Dictionary<string, string?>(deployed);
        Assert.True(env.ContainsKey(Contract.GrpcPortVar) && env.ContainsKey(Contract.HttpPortVar), $"{role.Name()}: ports not set");
        env[Contract.GrpcPortVar] = ports[role].Grpc.ToString();
        env[Contract.HttpPortVar] = ports[role].Http.ToString();
        foreach (var name in env.Keys.Where(Contract.AddressVars.ContainsKey).ToList())
            env[name] = string.Join(',', ServiceOptions.Addresses(env[name]!, name)
                .Select(u => $"http://127.0.0.1:{ports[Contract.ServiceHostRole(u.Host)!.Value].Grpc}"));
        if (env.ContainsKey(Contract.RedisVar)) env[Contract.RedisVar] = $"127.0.0.1:{redisPort}";
        if (env.ContainsKey(Contract.ModelVar)) env[Contract.ModelVar] = "";
        return env;
    }

    /// <summary>The service's own build output, of this test build's configuration (the project reference builds it).</summary>
    private static string ServiceDll(ServiceRole role)
    {
        var framework = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/'));
        var path = Contract.Repo("services", role.Name(), "bin", framework.Parent!.Name, framework.Name, Contract.AssemblyName(role) + ".dll");
        Assert.True(File.Exists(path), $"{path} not built");
        return path;
    }

    private static Process Start(string file, string[] args, Dictionary<string, string?> env, StringBuilder output)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Exactly the deployed LLM_* settings: none inherited from whoever runs the tests.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("LLM_", StringComparison.Ordinal)).ToList()) psi.Environment.Remove(key);
        foreach (var (key, value) in env) psi.Environment[key] = value;
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

}
