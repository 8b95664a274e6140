namespace Cluster.Rpc.Server;

public sealed class RpcServerOptions
{
    /// <summary>Largest request message accepted, in bytes (decompressed). The gRPC default is 4 MiB.</summary>
    public int MaxReceiveMessageSize { get; set; } = 4 * 1024 * 1024;

    /// <summary>When true, INTERNAL statuses carry the exception's message (never its stack trace).</summary>
    public bool EnableDetailedErrors { get; set; }

    /// <summary>Source of the per-call server activities (see <see cref="TraceContext"/>); null: no tracing.</summary>
    public System.Diagnostics.ActivitySource? ActivitySource { get; set; }
}
