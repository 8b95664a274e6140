using Cluster.Rpc.Client;
using Xunit;

namespace Cluster.Rpc.Tests.Interop;

/// <summary>Our client runs each interop case against grpcio's Python server.</summary>
public sealed class ClientAgainstPythonServerTests(PythonServerFixture server) : IClassFixture<PythonServerFixture>
{
    public static TheoryData<string> Cases => new(ClientCases.Names);

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Cases))]
    public async Task Our_client_against_python_server(string name)
    {
        if (server.Port == 0) return;
        using var channel = new RpcChannel(new Uri($"http://127.0.0.1:{server.Port}"), new RpcChannelOptions { MaxReceiveMessageSize = 8 << 20 });
        await ClientCases.RunAsync(name, channel, server.CancelledAsync);
    }
}
