namespace Cluster.Rpc.Client;

public sealed class RpcChannelOptions
{
    /// <summary>Largest response message accepted, in bytes. The gRPC default is 4 MiB.</summary>
    public int MaxReceiveMessageSize { get; set; } = 4 * 1024 * 1024;

    /// <summary>
    /// Interval of HTTP/2 PINGs while calls are active. grpc-core servers answer pings more
    /// frequent than their policy allows with GOAWAY "too_many_pings", so 60 s is the floor.
    /// </summary>
    public TimeSpan KeepAlivePingDelay { get; set; } = TimeSpan.FromSeconds(60);

    public TimeSpan KeepAlivePingTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Time to establish a TCP connection before the call fails UNAVAILABLE.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);
}
