using Cluster.Grpc.Tests.Hosting;
using Cluster.Interop;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>Our server (hosted as services are) on 127.0.0.1 with a free port, serving the interop TestService.</summary>
public sealed class OurServerFixture : IAsyncLifetime
{
    public InteropService Service { get; } = new();

    public GrpcTestHost Host { get; private set; } = null!;

    public int Port => Host.GrpcEndPoint.Port;

    public async Task InitializeAsync() =>
        Host = await GrpcTestHost.StartAsync(s => s.AddSingleton(Service), app => app.MapGrpcService<InteropService>());

    public async Task DisposeAsync() => await Host.DisposeAsync();
}
