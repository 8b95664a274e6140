using Cluster.Interop;
using Cluster.Tests;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>
/// The standard services a served host offers, seen from clients that are not ours: the service list
/// through server reflection (what grpcurl and other tools use to discover a server) from grpcio and
/// grpc-js, and the grpc.health.v1 Check from grpcio.
/// </summary>
public sealed class StandardServicesTests(OurServerFixture server) : IClassFixture<OurServerFixture>
{
    private static readonly string NodeDir = Path.Combine(ExternalTools.RepoRoot, "tests", "interop", "node");

    [SkippableFact(Timeout = 120_000)]
    public async Task Python_client_lists_services_by_reflection_and_sees_health_serving()
    {
        if (PythonStubs.Get() is not { } stubs) return;
        var (code, stdout, stderr) = await Task.Run(() => ExternalTools.Run(ExternalTools.Python,
            [Path.Combine(PythonStubs.ScriptsDir, "standard_services_client.py"), stubs, server.Port.ToString()], TimeSpan.FromSeconds(60)));
        Assert.True(code == 0, $"python client failed ({code}):\n{stdout}\n{stderr}");
        AssertListsStandardServices(stdout);
        Assert.Contains("HEALTH SERVING", Lines(stdout));
    }

    [SkippableFact(Timeout = 120_000)]
    public async Task Node_client_lists_services_by_reflection()
    {
        if (!NodeClientTests.NodeAvailable()) return;
        var (code, stdout, stderr) = await Task.Run(() => ExternalTools.Run("node",
            [Path.Combine(NodeDir, "standard_services.js"), Path.Combine(ExternalTools.RepoRoot, "protos"), server.Port.ToString()], TimeSpan.FromSeconds(60), NodeDir));
        Assert.True(code == 0, $"node client failed ({code}):\n{stdout}\n{stderr}");
        AssertListsStandardServices(stdout);
    }

    private static void AssertListsStandardServices(string stdout)
    {
        var services = Lines(stdout).Where(l => l.StartsWith("SERVICE ", StringComparison.Ordinal)).Select(l => l["SERVICE ".Length..]).ToList();
        Assert.Contains(TestService.Descriptor.FullName, services);
        Assert.Contains("grpc.health.v1.Health", services);
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
