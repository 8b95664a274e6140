using Cluster.Interop;
using Cluster.Serving.Routing;
using Grpc.Health.V1;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>Our client against our server: the quick loop-back check of both halves, and the host's plumbing.</summary>
public sealed class OwnClientTests(OurServerFixture server) : IClassFixture<OurServerFixture>
{
    [SkippableFact(Timeout = 30_000)]
    public async Task Health_port_answers_over_http11()
    {
        using var http = new HttpClient();
        var text = await http.GetStringAsync($"http://127.0.0.1:{server.Host.HttpEndPoint.Port}/healthz");
        Assert.Equal("ok", text);
        Assert.NotEqual(server.Host.HttpEndPoint.Port, server.Port);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Standard_health_check_answers_serving()
    {
        using var channel = GrpcChannels.Create(server.Host.GrpcAddress);
        var response = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(10));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, response.Status);
    }

    [SkippableFact(Timeout = 60_000)]
    public async Task Client_calls_all_shapes_against_own_server()
    {
        using var channel = GrpcChannels.Create(server.Host.GrpcAddress);
        await ClientCases.RunAllAsync(new TestService.TestServiceClient(channel), server.Service);
    }
}
