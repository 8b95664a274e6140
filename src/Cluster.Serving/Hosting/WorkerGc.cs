namespace Cluster.Serving.Hosting;

/// <summary>
/// GC settings of the model workers (prefill, decode), which can only be set when a process starts:
/// in the runtimeconfig of Cluster.Prefill/Cluster.Decode (their .csproj) and, for the services
/// `llmctl up` runs inside llmctl, in the environment it starts them with.
/// </summary>
public static class WorkerGc
{
    /// <summary>
    /// Arrays below this size are allocated in the small object heap (the runtime's default is 85,000
    /// bytes). A worker's large arrays are short-lived: a checkpoint's capture of a layer's K/V, a put's
    /// blocks, a fetched block on its way into the cache. In the large object heap they are collected only
    /// by a full GC, so under load they piled up: 64 streams against a decode worker with a 17 MiB KV budget
    /// grew its GC heap by 92-119 MiB of dead captures; with 4 MiB here, 24-49 MiB
    /// (DecodeAdmissionTests). A layer block of SmolLM2-135M at 300 tokens is 0.46 MB.
    /// </summary>
    public const int LargeObjectThresholdBytes = 4 << 20;

    /// <summary>The same setting as environment variables, for a worker started as a child process.</summary>
    public static IEnumerable<KeyValuePair<string, string>> Environment(ServiceRole role) =>
        role is ServiceRole.Prefill or ServiceRole.Decode
            ? [new("DOTNET_GCLOHThreshold", $"0x{LargeObjectThresholdBytes:X}")]
            : [];
}
