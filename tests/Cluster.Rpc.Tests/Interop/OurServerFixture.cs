using Cluster.Interop;
using Cluster.Rpc.Hosting;
using Xunit;

namespace Cluster.Rpc.Tests.Interop;

/// <summary>Our server on 127.0.0.1 with a free port, serving the interop TestService.</summary>
public sealed class OurServerFixture : IAsyncLifetime
{
    public InteropService Service { get; } = new();

    public RpcServerHost Host { get; private set; } = null!;

    public int Port => Host.GrpcEndPoint.Port;

    public async Task InitializeAsync()
    {
        Host = RpcServerHost.Create(new RpcHostOptions(), (registry, _) => Service.Register(registry));
        await Host.StartAsync();
    }

    public async Task DisposeAsync() => await Host.DisposeAsync();
}
