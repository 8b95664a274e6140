using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using Grpc.Core;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// `llmctl` as a person runs it (issue 19): each case was a complaint — a noisy `up`, errors glued to
/// the echoed prompt, endpoints without a scheme crashing, a folder model refused, a port clash as a stack
/// trace, unknown sessions silently created, `serve ROLE --help` without options.
/// </summary>
public class LlmctlCliTests(OpenAiFixture f) : IClassFixture<OpenAiFixture>
{
    private static string Llmctl => Path.Combine(AppContext.BaseDirectory, "llmctl.dll");

    private static (int Code, string Stdout, string Stderr) Run(string stdin, params string[] args) =>
        ExternalCommands.RunWithInput("dotnet", [Llmctl, .. args], stdin, TimeSpan.FromMinutes(2));

    private string Endpoint => $"127.0.0.1:{f.Cluster.Gateway.GrpcEndPoint.Port}";

    [SharedDataFact]
    public void A_too_long_prompt_is_one_readable_error_line_and_is_not_echoed()
    {
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 150));
        int tokens = f.Tokenizer.Encode(prompt, addBos: true).Length;
        var (code, stdout, stderr) = Run("", "generate", "--endpoint", Endpoint, "--prompt", prompt);
        Assert.Equal(3, code);
        Assert.Equal("", stdout);
        Assert.StartsWith($"error: the prompt has {tokens} tokens but the model's context is 512", stderr);
        Assert.Single(stderr.TrimEnd().Split('\n'));
        Assert.DoesNotContain("Status(", stderr);
    }

    [SharedDataFact]
    public void Max_tokens_cut_by_the_context_is_a_warning_not_a_silent_stop()
    {
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 42));
        int tokens = f.Tokenizer.Encode(prompt, addBos: true).Length;
        Assert.InRange(tokens, 400, 500);
        var (code, _, stderr) = Run("", "generate", "--endpoint", Endpoint, "--prompt", prompt, "--max-tokens", "200", "--ignore-eos");
        Assert.True(code == 0, stderr);
        Assert.Contains("warning: stopped after", stderr);
        Assert.Contains("of --max-tokens 200 tokens: the prompt and output reached the model's context (512 tokens)", stderr);
    }

    [SharedDataTheory]
    [InlineData("{0}")]
    [InlineData("http://{0}")]
    [InlineData("localhost:{1}")]
    public void Endpoints_are_accepted_as_host_port_or_url(string form)
    {
        string endpoint = string.Format(form, Endpoint, f.Cluster.Gateway.GrpcEndPoint.Port);
        var (code, stdout, stderr) = Run("", "generate", "--endpoint", endpoint, "--prompt", "Once upon a time", "--max-tokens", "4");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.StartsWith("Once upon a time", stdout);
    }

    /// <summary>`generate --endpoint --n 2` prints each output of the cluster as `--local` prints its own.</summary>
    [SharedDataFact]
    public void Several_outputs_through_the_cluster_print_as_the_local_run_prints_them()
    {
        string[] common = ["generate", "--prompt", "Once upon a time", "--max-tokens", "12", "--n", "2", "--temperature", "0.9", "--seed", "3", "--json"];
        var (localCode, local, localErr) = Run("", [.. common, "--local", "--model", f.ModelPath]);
        var (code, remote, stderr) = Run("", [.. common, "--endpoint", Endpoint]);
        Assert.True(localCode == 0 && code == 0, localErr + stderr);
        using var l = System.Text.Json.JsonDocument.Parse(local);
        using var r = System.Text.Json.JsonDocument.Parse(remote);
        string[] Texts(System.Text.Json.JsonDocument d) => [.. d.RootElement.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("text").GetString()!)];
        Assert.Equal(2, Texts(r).Length);
        Assert.Equal(Texts(l), Texts(r));
    }

    /// <summary>`generate --endpoint --repeat 3` sends the request three times from one process (the cluster
    /// bench's client, issue 17): three JSON lines, three sessions, the same greedy tokens.</summary>
    [SharedDataFact]
    public void Repeat_sends_the_request_that_many_times_from_one_client()
    {
        var (code, stdout, stderr) = Run("", "generate", "--endpoint", Endpoint, "--prompt", "Once upon a time", "--max-tokens", "6", "--temperature", "0", "--json", "--repeat", "3");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        var lines = stdout.TrimEnd().Split('\n');
        Assert.Equal(3, lines.Length);
        var docs = lines.Select(l => System.Text.Json.JsonDocument.Parse(l)).ToArray();
        Assert.Equal(3, docs.Select(d => d.RootElement.GetProperty("session_id").GetString()).Distinct().Count());
        var ids = docs.Select(d => string.Join(",", d.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()))).ToArray();
        Assert.Equal(6, docs[0].RootElement.GetProperty("ids").GetArrayLength());
        Assert.All(ids, i => Assert.Equal(ids[0], i));

        var (localCode, _, localErr) = Run("", "generate", "--local", "--model", f.ModelPath, "--prompt", "Hi", "--repeat", "2");
        Assert.Equal(2, localCode);
        Assert.Contains("--repeat needs --endpoint", localErr);
    }

    [SharedDataFact]
    public void Model_with_endpoint_is_an_error_not_silently_ignored()
    {
        var (code, _, stderr) = Run("", "generate", "--endpoint", Endpoint, "--model", f.ModelPath, "--prompt", "Hi");
        Assert.Equal(2, code);
        Assert.Contains("--model", stderr);
        Assert.Single(stderr.TrimEnd().Split('\n'));
    }

    [SharedDataFact]
    public void Chat_with_an_unknown_session_is_not_found_and_a_refused_turn_does_not_end_the_chat()
    {
        var (code, _, stderr) = Run("Hello\n", "chat", "--endpoint", Endpoint, "--session", "no-such-session");
        Assert.Equal(3, code);
        Assert.Contains("session 'no-such-session' not found", stderr);

        // A prompt past the context is refused; the next line is still answered.
        string tooLong = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 150));
        (code, var stdout, stderr) = Run($"{tooLong}\nThe dog ran.\n", "chat", "--endpoint", Endpoint, "--max-tokens", "4");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("turn refused: the prompt has", stderr);
        Assert.Contains("[turn 0:", stderr);
        Assert.Contains("sink_window(4,252)", stderr); // the bounded default policy
    }

    [Fact]
    public void Serve_role_help_lists_the_role_options_with_defaults()
    {
        var (code, stdout, _) = Run("", "serve", "gateway", "--help");
        Assert.Equal(0, code);
        foreach (var option in new[] { "--grpc-port", "--http-port", "--chat-template", "--log-level", "--policy" }) Assert.Contains(option, stdout);
        Assert.Contains("(default: 8000)", stdout);
        Assert.DoesNotContain("--max-batch", stdout); // decode's
    }

    [Fact]
    public void A_service_whose_port_is_taken_says_which_port_and_option_in_one_line()
    {
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        int port = ((IPEndPoint)holder.LocalEndpoint).Port;
        var (code, _, stderr) = Run("", "serve", "cachemanager", "--host", "127.0.0.1", "--grpc-port", port.ToString(), "--http-port", "0");
        Assert.Equal(2, code);
        Assert.Equal($"error: port {port} on 127.0.0.1 is already in use (the cachemanager's --grpc-port): stop what holds it, or choose another port with --grpc-port", stderr.Trim());
    }

    [Fact]
    public void Up_with_a_taken_port_names_it_and_its_option_before_starting_anything()
    {
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        int port = ((IPEndPoint)holder.LocalEndpoint).Port;
        var (code, stdout, stderr) = Run("", "up", "--port", port.ToString(), "--port-offset", FreeOffset().ToString(), "--model", "/no/such/model.bin");
        Assert.Equal(2, code);
        Assert.Contains("error:", stderr); // the model is checked first
        if (SharedData.Root is null) return;
        (code, stdout, stderr) = Run("", "up", "--port", port.ToString(), "--port-offset", FreeOffset().ToString(), "--model", f.ModelPath);
        Assert.Equal(2, code);
        Assert.Equal($"error: port {port} on 127.0.0.1 (the gateway's gRPC port) is already in use: stop what holds it, or choose other ports with --port", stderr.Trim());
        Assert.DoesNotContain("ready", stdout);
    }

    [Fact]
    public void Up_with_a_bad_model_says_so_once_and_starts_no_service()
    {
        var (code, stdout, stderr) = Run("", "up", "--model", "/no/such/model.bin", "--port-offset", FreeOffset().ToString());
        Assert.Equal(2, code);
        Assert.Single(stderr.TrimEnd().Split('\n'));
        Assert.StartsWith("error:", stderr);
        Assert.DoesNotContain("[", stdout + stderr); // no child service printed anything
    }

    [SharedDataFact]
    public async Task Up_on_a_stories260K_folder_is_ready_within_15_lines_and_silent_while_idle()
    {
        int offset = FreeOffset();
        var lines = new ConcurrentQueue<string>();
        using var up = StartUp(lines, "--port-offset", offset.ToString());
        try
        {
            var deadline = DateTime.UtcNow.AddMinutes(2);
            while (!lines.Any(l => l.StartsWith("Ctrl-C stops", StringComparison.Ordinal)))
            {
                Assert.False(up.HasExited, "up exited: " + string.Join("\n", lines));
                Assert.True(DateTime.UtcNow < deadline, "not up within 2 minutes: " + string.Join("\n", lines));
                await Task.Delay(200);
            }
            var startup = lines.ToArray();
            Assert.True(startup.Length <= 15, $"{startup.Length} lines before ready:\n{string.Join("\n", startup)}");
            Assert.Equal(4, startup.Count(l => l.Contains(" ready ")));
            Assert.Contains(startup, l => l.Contains($"http://127.0.0.1:{8000 + offset}/v1"));
            Assert.Contains(startup, l => l.Contains($"http://127.0.0.1:{50051 + offset}"));

            // Issue 17: every service runs without tiered compilation (ServiceJit), so the first requests do
            // not share the decode step's cores with background recompilation; the workers have the GC setting too.
            var services = ChildEnvironments(up.Id);
            Assert.Equal(4, services.Count);
            Assert.All(services, e => Assert.Equal("0", e.GetValueOrDefault(ServiceJit.TieredCompilationVariable)));
            // and without the thread pool's spin-before-block (ServiceThreadPool): a sched_yield loop after every
            // per-token burst put pool threads on the decode step's cores about 100 times a token.
            Assert.All(services, e => Assert.Equal("0", e.GetValueOrDefault(ServiceThreadPool.SpinLimitVariable)));
            Assert.Equal(2, services.Count(e => e.ContainsKey("DOTNET_GCLOHThreshold")));

            using var http = new HttpClient();
            Assert.Contains("stories260K", await http.GetStringAsync($"http://127.0.0.1:{8000 + offset}/v1/models"));
            await Task.Delay(TimeSpan.FromSeconds(7)); // several of the gateway's 2 s health rounds and a request
            Assert.True(lines.Count == startup.Length, "printed while idle:\n" + string.Join("\n", lines.Skip(startup.Length)));
        }
        finally
        {
            StopUp(up);
        }
    }

    /// <summary>Issue 21: `up` supervises its services: a SIGKILLed cache manager is started again on its
    /// port, with a log line, while the rest of the cluster keeps running, and requests are served as before.</summary>
    [SharedDataFact]
    public async Task Up_restarts_a_killed_service_and_keeps_serving()
    {
        int offset = FreeOffset();
        var lines = new ConcurrentQueue<string>();
        using var up = StartUp(lines, "--port-offset", offset.ToString(), "--policy", "sink_window(4,20)");
        async Task WaitForLine(Func<string, bool> match, string what)
        {
            for (var deadline = DateTime.UtcNow.AddMinutes(2); !lines.Any(match); await Task.Delay(200))
            {
                Assert.False(up.HasExited, "up exited: " + string.Join("\n", lines));
                Assert.True(DateTime.UtcNow < deadline, $"no {what} within 2 minutes:\n" + string.Join("\n", lines));
            }
        }
        try
        {
            await WaitForLine(l => l.StartsWith("Ctrl-C stops", StringComparison.Ordinal), "ready cluster");
            var ready = lines.Single(l => l.Contains("cachemanager") && l.Contains(" ready "));
            int pid = int.Parse(ready[(ready.LastIndexOf("pid ", StringComparison.Ordinal) + 4)..].TrimEnd(')'));
            using var channel = Cluster.Serving.Routing.GrpcChannels.Create($"127.0.0.1:{50051 + offset}");
            var client = new LlmCluster.V1.Gateway.GatewayClient(channel);
            async Task<List<int>> Generate()
            {
                var request = new LlmCluster.V1.GenerateRequest
                {
                    Text = "Once upon a time, there was a little girl named Lily. She loved to play outside.",
                    Sampling = new LlmCluster.V1.SamplingParams { Temperature = 0.8f, Seed = 5, MaxTokens = 24 },
                };
                var ids = new List<int>();
                using var call = client.Generate(request, deadline: DateTime.UtcNow.AddMinutes(1));
                await foreach (var r in call.ResponseStream.ReadAllAsync())
                    if (r.ResponseCase == LlmCluster.V1.GenerateResponse.ResponseOneofCase.Chunk) ids.AddRange(r.Chunk.TokenIds);
                return ids;
            }
            var before = await Generate();

            Process.GetProcessById(pid).Kill();
            await WaitForLine(l => l.StartsWith("cachemanager (pid " + pid + ") exited", StringComparison.Ordinal), "line saying the cache manager died");
            await WaitForLine(l => l.StartsWith("cachemanager restarted", StringComparison.Ordinal), "restart line");
            Assert.False(up.HasExited);

            // Served again, with the same tokens, once the new cache manager listens.
            List<int>? after = null;
            for (var deadline = DateTime.UtcNow.AddSeconds(60); after is null; await Task.Delay(500))
            {
                try { after = await Generate(); }
                catch (Grpc.Core.RpcException) when (DateTime.UtcNow < deadline) { }
            }
            Assert.Equal(before, after);
        }
        finally
        {
            StopUp(up);
        }
    }

    /// <summary>Issue 21: stopping `up` stops its services gracefully (SIGTERM first), so a cache manager
    /// with --kv-spill writes the sessions it holds to disk, and the next `up` on the same directory
    /// starts with them.</summary>
    [SharedDataFact]
    public async Task Up_stops_its_services_gracefully_and_the_cache_manager_spills_its_sessions()
    {
        var spill = Directory.CreateTempSubdirectory("llmcluster-spill-").FullName;
        try
        {
            int offset = FreeOffset();
            var lines = new ConcurrentQueue<string>();
            using var up = StartUp(lines, "--port-offset", offset.ToString(), "--kv-spill", spill);
            try
            {
                for (var deadline = DateTime.UtcNow.AddMinutes(2); !lines.Any(l => l.StartsWith("Ctrl-C stops", StringComparison.Ordinal)); await Task.Delay(200))
                {
                    Assert.False(up.HasExited, "up exited: " + string.Join("\n", lines));
                    Assert.True(DateTime.UtcNow < deadline, "no ready cluster within 2 minutes:\n" + string.Join("\n", lines));
                }
                using var channel = Cluster.Serving.Routing.GrpcChannels.Create($"127.0.0.1:{50051 + offset}");
                var client = new LlmCluster.V1.Gateway.GatewayClient(channel);
                foreach (var seed in new ulong[] { 1, 2 })
                {
                    // A first connection right after "ready" was once refused on a loaded CI machine: retry briefly.
                    for (var deadline = DateTime.UtcNow.AddSeconds(30); ; await Task.Delay(500))
                    {
                        try
                        {
                            using var call = client.Generate(new LlmCluster.V1.GenerateRequest
                            {
                                Text = "Once upon a time",
                                Sampling = new LlmCluster.V1.SamplingParams { Temperature = 0.8f, Seed = seed, MaxTokens = 8 },
                            }, deadline: DateTime.UtcNow.AddMinutes(1));
                            await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }
                            break;
                        }
                        catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Unavailable && DateTime.UtcNow < deadline) { }
                    }
                }
                Assert.Empty(Directory.GetFiles(spill, "*.kv")); // nothing evicted while running
            }
            finally
            {
                StopUp(up);
            }
            Assert.Equal(0, up.ExitCode);
            // Both sessions, written at the cache manager's graceful shutdown.
            Assert.Equal(2, Directory.GetFiles(spill, "*.kv").Length);
        }
        finally
        {
            Directory.Delete(spill, recursive: true);
        }
    }

    /// <summary>`llmctl up` on stories260K (one thread per worker) as a process; every line it prints goes to <paramref name="lines"/>.</summary>
    private static Process StartUp(ConcurrentQueue<string> lines, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in (string[])[Llmctl, "up", "--model", SharedData.Path_("models", "stories260K"), "--threads", "1", .. args]) psi.ArgumentList.Add(a);
        var up = Process.Start(psi)!;
        up.OutputDataReceived += (_, e) => { if (e.Data is { } l) lines.Enqueue(l); };
        up.ErrorDataReceived += (_, e) => { if (e.Data is { } l) lines.Enqueue(l); };
        up.BeginOutputReadLine();
        up.BeginErrorReadLine();
        return up;
    }

    /// <summary>The environment of each child process of <paramref name="pid"/> (Linux /proc).</summary>
    private static List<Dictionary<string, string>> ChildEnvironments(int pid) =>
        Directory.GetDirectories($"/proc/{pid}/task").SelectMany(task => File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(child => File.ReadAllText($"/proc/{child}/environ").Split('\0', StringSplitOptions.RemoveEmptyEntries)
                .Select(kv => kv.Split('=', 2)).Where(kv => kv.Length == 2).GroupBy(kv => kv[0]).ToDictionary(g => g.Key, g => g.Last()[1]))
            .ToList();

    /// <summary>SIGTERM: up stops its services (SIGKILL would orphan them).</summary>
    private static void StopUp(Process up)
    {
        if (!up.HasExited) Process.Start("kill", ["-TERM", up.Id.ToString()])!.WaitForExit();
        if (!up.WaitForExit(30_000)) up.Kill(entireProcessTree: true);
    }

    /// <summary>A port offset whose every port of a 1+1+1+1 cluster is free now (other clusters may run on the defaults).</summary>
    private static int FreeOffset()
    {
        for (int attempt = 0; ; attempt++)
        {
            int offset = Random.Shared.Next(200, 1400) * 10;
            int[] ports = [50051, 50052, 50053, 50054, 8000, 9092, 9093, 9094];
            if (ports.All(p => IsFree(p + offset))) return offset;
            Assert.True(attempt < 50, "no free port offset");
        }
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
