using System.Text.RegularExpressions;
using Cluster.Serving.Hosting;
using Cluster.Tests;
using Xunit;

namespace Cluster.Deploy.Tests;

public class ComposeAndDockerfileTests
{
    private static readonly string DockerfilePath = Contract.Repo("deploy", "docker", "Dockerfile");

    /// <summary>Dockerfile stages by name, each as its instruction lines (continuations joined).</summary>
    private static Dictionary<string, List<string>> Stages()
    {
        var text = Regex.Replace(File.ReadAllText(DockerfilePath), @"\\\r?\n", " ");
        var stages = new Dictionary<string, List<string>>();
        List<string>? current = null;
        foreach (var line in text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')))
        {
            if (Regex.Match(line, @"^FROM\s+(\S+)\s+AS\s+(\S+)$", RegexOptions.IgnoreCase) is { Success: true } m)
                stages[m.Groups[2].Value] = current = [line];
            else current?.Add(line);
        }
        return stages;
    }

    [SkippableFact]
    public void Dockerfile_has_a_shared_build_stage_and_a_runtime_target_per_service_with_the_default_ports()
    {
        var stages = Stages();
        Assert.StartsWith("FROM mcr.microsoft.com/dotnet/sdk:10.0 ", stages["build"][0]);
        Assert.StartsWith("FROM mcr.microsoft.com/dotnet/aspnet:10.0 ", stages["runtime"][0]);
        var runtime = string.Join('\n', stages["runtime"]);
        Assert.Contains("libopenblas0-pthread", runtime);
        Assert.Matches(@"(?m)^USER \$APP_UID$", runtime);   // the aspnet image's non-root user
        Assert.Matches($@"(?m)^HEALTHCHECK .*CMD curl -fsS ""http://127\.0\.0\.1:\${{{Contract.HttpPortVar}}}{Contract.HealthPath}""", runtime);
        var build = string.Join('\n', stages["build"]);
        foreach (var role in Contract.Roles)
        {
            Assert.Contains(role.Name(), Regex.Match(build, @"for s in ([a-z ]+); do\s+dotnet publish").Groups[1].Value.Split(' '));
            var stage = stages[role.Name()];
            Assert.Equal($"FROM runtime AS {role.Name()}", stage[0]);
            var env = stage.Where(l => l.StartsWith("ENV ")).SelectMany(l => Regex.Matches(l, @"(\w+)=(\S+)"))
                .ToDictionary(m => m.Groups[1].Value, m => (string?)m.Groups[2].Value);
            Assert.Equal(new[] { Contract.GrpcPortVar, Contract.HttpPortVar }.Order(), env.Keys.Order());
            Assert.Equal(role.DefaultGrpcPort().ToString(), env[Contract.GrpcPortVar]);
            Assert.Equal(role.DefaultHttpPort().ToString(), env[Contract.HttpPortVar]);
            Assert.Contains($"EXPOSE {role.DefaultGrpcPort()} {role.DefaultHttpPort()}", stage);
            Assert.Contains($"COPY --from=build /out/{role.Name()}/ ./", stage);
            Assert.Contains($"ENTRYPOINT [\"dotnet\", \"{Contract.AssemblyName(role)}.dll\"]", stage);
        }
    }

    [SkippableFact]
    public void Dockerignore_keeps_host_build_outputs_out_of_the_image_context()
    {
        var lines = File.ReadAllLines(Contract.Repo(".dockerignore"));
        Assert.Contains("**/bin/", lines);
        Assert.Contains("**/obj/", lines);
        // The build stage copies these: they must not be ignored.
        foreach (var needed in new[] { "src/", "services/", "protos/" })
            Assert.DoesNotContain(needed, lines);
    }

    [SkippableFact]
    public void Compose_runs_each_service_from_its_dockerfile_target_with_only_its_own_options_and_the_default_ports()
    {
        var compose = Compose.Load();
        foreach (var role in Contract.Roles)
        {
            var running = Compose.Running(compose, role).ToList();
            Assert.Contains(running, r => r.Name == role.Name());
            foreach (var (name, service) in running)
            {
                Assert.Equal("deploy/docker/Dockerfile", service.At("build", "dockerfile").Text());
                Assert.True(File.Exists(Contract.Repo(service.At("build", "context").Text()!, "deploy/docker/Dockerfile")));
                Contract.CheckEnvironment(role, Compose.Environment(service), $"docker-compose.yml {name}");
                // The addresses other services use must resolve on the compose network: a service name.
                Assert.Contains(role.Name(), Compose.Services(compose).Keys);
            }
        }
        // Only the gateway is published to the host (its gRPC port).
        var published = Compose.Services(compose).Where(s => s.Value.At("ports") is not null).Select(s => s.Key).Order();
        Assert.Equal(new[] { "gateway", "grafana", "prometheus" }, published);
        Assert.Contains($"{ServiceRole.Gateway.DefaultGrpcPort()}:{ServiceRole.Gateway.DefaultGrpcPort()}",
            compose.At("services", "gateway", "ports").Seq("ports").Select(p => p.Text()));
    }

    [SkippableFact]
    public void Compose_mounts_the_model_read_only_from_the_host_folder_named_by_LLM_MODEL_DIR()
    {
        var compose = Compose.Load(new Dictionary<string, string> { ["LLM_MODEL_DIR"] = "/srv/models", ["LLM_MODEL"] = "/models/m.bin" });
        foreach (var role in Contract.Roles.Where(r => Contract.EnvVars(r).Contains(Contract.ModelVar)))
            foreach (var (name, service) in Compose.Running(compose, role))
            {
                Assert.Contains("/srv/models:/models:ro", service.At("volumes").Seq(name).Select(v => v.Text()));
                Assert.Equal("/models/m.bin", Compose.Environment(service)[Contract.ModelVar]);
            }
        // Unset, the model variable is empty: the services then generate a random model.
        Assert.Equal("", Compose.Environment(Compose.Load().At("services", "gateway").Map("gateway"))[Contract.ModelVar]);
    }

    [SkippableFact]
    public void Compose_gpu_profile_reserves_gpus_for_prefill_and_decode_under_the_same_names()
    {
        var services = Compose.Services(Compose.Load());
        foreach (var role in new[] { ServiceRole.Prefill, ServiceRole.Decode })
        {
            var gpu = services[role.Name() + "-gpu"].Map("gpu service");
            Assert.Equal(new object?[] { "gpu" }, gpu.At("profiles").Seq("profiles"));
            var device = gpu.At("deploy", "resources", "reservations", "devices").Seq("devices").Single();
            Assert.Equal("nvidia", device.At("driver").Text());
            Assert.Contains("gpu", device.At("capabilities").Seq("capabilities").Select(c => c.Text()));
            Assert.Contains(role.Name(), gpu.At("networks", "default", "aliases").Seq("aliases").Select(a => a.Text()));
            Assert.Null(services[role.Name()].At("profiles"));   // the CPU workers run by default
        }
    }

    [SkippableFact]
    public void Compose_runs_redis_with_appendonly_and_mounts_monitoring_files_that_exist()
    {
        var services = Compose.Services(Compose.Load());
        var command = services["redis"].At("command").Seq("redis command").Select(c => c.Text()).ToList();
        Assert.Equal("yes", command[command.IndexOf("--appendonly") + 1]);
        foreach (var name in new[] { "prometheus", "grafana" })
            foreach (var volume in services[name].At("volumes").Seq(name).Select(v => v.Text()!).Where(v => v.StartsWith("./")))
                Assert.True(Path.Exists(Contract.Repo(volume.Split(':')[0])), $"{name} mounts missing {volume}");
    }

    [SkippableFact]
    public void Docker_compose_accepts_the_file_with_and_without_the_gpu_profile()
    {
        // Optional: docker-compose (apt) is not part of CI's tools (it pulls in a Docker engine), so
        // this check runs only where a developer has it.
        var compose = ExternalCommands.Find("docker-compose");
        Xunit.Skip.If(compose is null, "docker-compose is missing (optional, not in CI): apt docker-compose validates docker-compose.yml");
        foreach (string[] args in new[] { new[] { "config", "-q" }, new[] { "--profile", "gpu", "config", "-q" } })
        {
            var (code, stdout, stderr) = ExternalTools.Run(compose!, ["-f", Contract.Repo("docker-compose.yml"), .. args], TimeSpan.FromSeconds(60));
            Assert.True(code == 0, $"docker-compose {string.Join(' ', args)}: {stdout}{stderr}");
        }
    }

    [SkippableFact]
    public void Every_deploy_yaml_file_parses()
    {
        // Helm templates are Go templates, not YAML, until rendered: HelmChartTests reads them as text.
        var templates = Contract.Repo("deploy", "k8s", "helm", "llm-cluster", "templates");
        var files = Directory.EnumerateFiles(Contract.Repo("deploy"), "*.*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".yaml") || f.EndsWith(".yml")).Where(f => !f.StartsWith(templates))
            .Append(Contract.Repo("docker-compose.yml")).ToList();
        Assert.True(files.Count >= 15, $"only {files.Count} YAML files found");
        Assert.All(files, f => Assert.NotEmpty(Yaml.LoadAll(File.ReadAllText(f))));
    }
}
