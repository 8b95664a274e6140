namespace Cluster.Serving.Hosting;

/// <summary>
/// Thread-pool settings of every service process, which can only be set when a process starts: in the
/// service's runtimeconfig (its .csproj) and, for the services `llmctl up` runs inside llmctl, in the
/// environment it starts them with (<see cref="ServiceRuntime"/>).
/// <para>
/// A thread-pool worker that runs out of work spins before it blocks, calling sched_yield between
/// checks (the runtime's default: 70 spins). The services' pool work is a burst per token (the decode
/// worker's stream write, the gateway's relay and session append) once every 15-40 ms, so nearly every
/// burst ends in a full spin that finds nothing: measured over 5 requests of 64 tokens
/// (bench/RESULTS.md, issue 17), the decode worker's and the gateway's pool threads made 23,000-36,000
/// involuntary context switches each (about 100 per token per process, each a sched_yield handing the
/// core back), the cache manager's and the prefill's 16,000-26,000. On a 2-core machine every one of
/// those is a thread put on a core the decode step's two compute threads were using. With no spinning
/// the same runs made 700-2,000 each, and the pool threads used 10-25% less CPU (the wake-up after a
/// block costs a futex call per burst, which a burst every 15-40 ms affords).
/// </para>
/// </summary>
public static class ServiceThreadPool
{
    /// <summary>The runtime's environment variable for <c>System.Threading.ThreadPool.UnfairSemaphoreSpinLimit</c>.</summary>
    public const string SpinLimitVariable = "DOTNET_ThreadPool_UnfairSemaphoreSpinLimit";

    /// <summary>The setting as environment variables, for a service started as a child process. A value the
    /// parent's environment already sets is left to it (so that both can be measured).</summary>
    public static IEnumerable<KeyValuePair<string, string>> Environment() =>
        System.Environment.GetEnvironmentVariable(SpinLimitVariable) is null ? [new(SpinLimitVariable, "0")] : [];
}
