using Cluster.Grpc.Tests.Hosting;
using Cluster.Interop;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

/// <summary>The benchmark's server: the interop TestService on the tests' host, which is configured like ServiceHost.</summary>
internal static class BenchServer
{
    public static Task<GrpcTestHost> StartAsync() =>
        GrpcTestHost.StartAsync(s => s.AddSingleton(new InteropService()), app => app.MapGrpcService<InteropService>());
}
