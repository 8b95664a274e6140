namespace Cluster.Rpc.Client;

/// <summary>Per-call settings.</summary>
/// <param name="Headers">Custom metadata sent with the request.</param>
/// <param name="Deadline">UTC time after which the call fails with DEADLINE_EXCEEDED; sent as grpc-timeout.</param>
/// <param name="CancellationToken">Cancels the call (RST_STREAM CANCEL to the server; CANCELLED locally).</param>
public readonly record struct CallOptions(Metadata? Headers = null, DateTime? Deadline = null, CancellationToken CancellationToken = default)
{
    /// <summary>Options with a deadline <paramref name="timeout"/> from now.</summary>
    public static CallOptions WithTimeout(TimeSpan timeout, CancellationToken cancellationToken = default) =>
        new(Deadline: DateTime.UtcNow + timeout, CancellationToken: cancellationToken);
}
