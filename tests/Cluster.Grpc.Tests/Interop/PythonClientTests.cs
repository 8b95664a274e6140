using Cluster.Tests;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>grpcio's Python client runs each interop case against our server.</summary>
public sealed class PythonClientTests(OurServerFixture server) : IClassFixture<OurServerFixture>
{
    public static TheoryData<string> Cases => new([.. ClientCases.Names, "gzip_unary", "oversize_request"]);

    [SkippableTheory(Timeout = 120_000)]
    [MemberData(nameof(Cases))]
    public async Task Python_client_against_our_server(string name)
    {
        if (PythonStubs.Get() is not { } stubs) return;
        var callId = Guid.NewGuid().ToString("N");
        var (code, stdout, stderr) = await Task.Run(() => ExternalTools.Run(ExternalTools.Python,
            [Path.Combine(PythonStubs.ScriptsDir, "interop_client.py"), stubs, server.Port.ToString(), name, callId],
            TimeSpan.FromSeconds(90)));
        Assert.True(code == 0, $"python client case {name} failed ({code}):\n{stdout}\n{stderr}");
        Assert.Contains("PASS " + name, stdout);
        if (name == "cancel_after_first_response")
            await server.Service.CancelledAsync(callId).WaitAsync(TimeSpan.FromSeconds(10));
    }
}
