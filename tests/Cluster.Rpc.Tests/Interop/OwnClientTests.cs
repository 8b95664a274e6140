using Cluster.Interop;
using Cluster.Rpc.Client;
using Xunit;

namespace Cluster.Rpc.Tests.Interop;

/// <summary>Our client against our server: the quick loop-back check of both halves.</summary>
public sealed class OwnClientTests(OurServerFixture server) : IClassFixture<OurServerFixture>
{
    [Fact(Timeout = 30_000)]
    public async Task Health_port_answers_over_http11()
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync($"http://127.0.0.1:{server.Host.HttpEndPoint.Port}/healthz");
        Assert.Equal("ok", text);
        Assert.NotEqual(server.Host.HttpEndPoint.Port, server.Port);
    }

    [Fact(Timeout = 30_000)]
    public async Task Client_calls_all_shapes_against_own_server()
    {
        using var channel = new RpcChannel(new Uri($"http://127.0.0.1:{server.Port}"));
        await ClientCases.RunAllAsync(channel, server.Service);
    }
}
