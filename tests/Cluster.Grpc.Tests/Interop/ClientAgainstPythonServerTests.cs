using Cluster.Interop;
using Cluster.Serving.Routing;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>Our client (a channel from GrpcChannels, as the services open them) runs each interop case against grpcio's Python server.</summary>
public sealed class ClientAgainstPythonServerTests(PythonServerFixture server) : IClassFixture<PythonServerFixture>
{
    public static TheoryData<string> Cases => new(ClientCases.Names);

    [SkippableTheory(Timeout = 120_000)]
    [MemberData(nameof(Cases))]
    public async Task Our_client_against_python_server(string name)
    {
        if (server.Port == 0) return;
        using var channel = GrpcChannels.Create(new Uri($"http://127.0.0.1:{server.Port}"));
        await ClientCases.RunAsync(name, new TestService.TestServiceClient(channel), server.CancelledAsync);
    }
}
