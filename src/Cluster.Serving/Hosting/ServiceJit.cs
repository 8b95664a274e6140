namespace Cluster.Serving.Hosting;

/// <summary>
/// JIT settings of every service process (gateway, prefill, decode, cache manager), which can only be
/// set when a process starts: in each service's runtimeconfig (its .csproj) and, for the services
/// `llmctl up` runs inside llmctl, in the environment it starts them with (<see cref="ServiceRuntime"/>).
/// <para>
/// Tiered compilation is off (issue 17). With it, a method is compiled quickly first, then again with
/// instrumentation (dynamic PGO), then again optimized, each time on a background thread, once it has
/// been called 30 times; a request's per-request code (gRPC handlers, protobuf, the session store, the KV
/// transfer) is called a few times per request, so the services kept compiling through their first few
/// dozen requests. Measured with `bench/cluster/run.sh`'s one warm-up request: 160-270 ms of CPU per
/// request in each service's ".NET Tiered Com" thread (600-750 ms over the four), on the same 2 cores as
/// the decode step, against 0-44 ms after 12 warm-ups. Off, every method is compiled once, optimized, at
/// its first call: the first request pays more, later ones nothing. The decode worker's CPU per token
/// (batch thread + kernel helper) did not change beyond the noise of the shared machine (bench/RESULTS.md).
/// </para>
/// </summary>
public static class ServiceJit
{
    /// <summary>The runtime's environment variable for <c>System.Runtime.TieredCompilation</c>.</summary>
    public const string TieredCompilationVariable = "DOTNET_TieredCompilation";

    /// <summary>The setting as environment variables, for a service started as a child process. A value the
    /// parent's environment already sets is left to it (so that both can be measured).</summary>
    public static IEnumerable<KeyValuePair<string, string>> Environment() =>
        System.Environment.GetEnvironmentVariable(TieredCompilationVariable) is null ? [new(TieredCompilationVariable, "0")] : [];
}

/// <summary>Everything a service process needs set in its environment when `llmctl up` (or a bench) starts
/// it as a child: the workers' GC settings (<see cref="WorkerGc"/>), every service's JIT settings
/// (<see cref="ServiceJit"/>) and thread-pool settings (<see cref="ServiceThreadPool"/>).</summary>
public static class ServiceRuntime
{
    public static IEnumerable<KeyValuePair<string, string>> Environment(ServiceRole role) => WorkerGc.Environment(role).Concat(ServiceJit.Environment()).Concat(ServiceThreadPool.Environment());
}
