using Cluster.Tests;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>
/// grpc-js (Node) runs each interop case against our server. Its packages come from
/// tests/interop/node/package-lock.json (`npm ci --prefix tests/interop/node`, run by .ci/run).
/// </summary>
public sealed class NodeClientTests(OurServerFixture server) : IClassFixture<OurServerFixture>
{
    private static readonly string NodeDir = Path.Combine(ExternalTools.RepoRoot, "tests", "interop", "node");

    public static TheoryData<string> Cases => new([.. ClientCases.Names, "gzip_unary", "oversize_request"]);

    [SkippableTheory(Timeout = 120_000)]
    [MemberData(nameof(Cases))]
    public async Task Node_client_against_our_server(string name)
    {
        if (!NodeAvailable()) return;
        var callId = Guid.NewGuid().ToString("N");
        var proto = Path.Combine(ExternalTools.RepoRoot, "protos", "test", "interop.proto");
        var (code, stdout, stderr) = await Task.Run(() => ExternalTools.Run("node",
            [Path.Combine(NodeDir, "client.js"), proto, server.Port.ToString(), name, callId], TimeSpan.FromSeconds(90), NodeDir));
        Assert.True(code == 0, $"node client case {name} failed ({code}):\n{stdout}\n{stderr}");
        Assert.Contains("PASS " + name, stdout);
        if (name == "cancel_after_first_response")
            await server.Service.CancelledAsync(callId).WaitAsync(TimeSpan.FromSeconds(10));
    }

    public static bool NodeAvailable()
    {
        if (Directory.Exists(Path.Combine(NodeDir, "node_modules", "@grpc", "grpc-js"))) return true;
        throw References.Missing("tests/interop/node/node_modules is missing: run `npm ci --prefix tests/interop/node`");
    }
}
