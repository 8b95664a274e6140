namespace Cluster.Serving.Hosting;

/// <summary>The four services of the cluster, with their default ports (docs/SERVICES.md).</summary>
public enum ServiceRole { Gateway, Prefill, Decode, CacheManager }

public static class ServiceRoles
{
    public static int DefaultGrpcPort(this ServiceRole role) => role switch
    {
        ServiceRole.Gateway => 50051,
        ServiceRole.Prefill => 50052,
        ServiceRole.Decode => 50053,
        _ => 50054,
    };

    /// <summary>The HTTP/1.1 port (/healthz, /metrics; the gateway's also serves the OpenAI-compatible API and
    /// the playground, on 8000 as vLLM's does); the workers' are 9092-9094.</summary>
    public static int DefaultHttpPort(this ServiceRole role) => role == ServiceRole.Gateway ? 8000 : role.DefaultGrpcPort() - 50051 + 9091;

    /// <summary>Lower-case name used on the command line, in metrics' service label and in deploy files.</summary>
    public static string Name(this ServiceRole role) => role.ToString().ToLowerInvariant();

    public static ServiceRole Parse(string name) =>
        Enum.GetValues<ServiceRole>().FirstOrDefault(r => r.Name() == name.ToLowerInvariant(), (ServiceRole)(-1)) is var r && Enum.IsDefined(r)
            ? r
            : throw new ArgumentException($"unknown service '{name}'; known: {string.Join(", ", Enum.GetValues<ServiceRole>().Select(x => x.Name()))}");
}
