using System.Diagnostics.Metrics;
using Cluster.Telemetry;
using Microsoft.Extensions.Hosting;

namespace Cluster.Serving.Hosting;

/// <summary>
/// Gives memory back to the OS once a service goes quiet after work. Measured under the front-door
/// fuzz (bench/RESULTS.md, issue 21): after a burst the GC keeps its free regions committed (gen0
/// budget and emptied regions: the gateway 29 -> 48 MiB committed around a 12 MiB live heap) and glibc
/// keeps freed native memory in its malloc arenas (+2 to +6 MiB), and an idle process runs no GC that
/// would decommit them, so RSS stayed where the burst took it for as long as nothing happened. This
/// runs an aggressive GC (which decommits the free regions) and glibc's malloc_trim (which returns
/// free arena pages) when a service goes quiet and once more a minute later.
/// <para>
/// "Quiet" is judged by allocation, not by requests: Prometheus scrapes, /healthz probes and the
/// gateway's 2-second worker health checks never stop, but they allocate a few KiB each. A period in
/// which the process allocated less than <see cref="QuietBytes"/>, after at least
/// <see cref="WorkBytes"/> were allocated since the last trim, triggers one trim; so a busy service is
/// never paused for this and an idle one is trimmed once, not every period. What is released later
/// without allocating (sessions swept when their TTL ends, Kestrel's memory pool evicting idle blocks)
/// is given back by one more trim once the service has been quiet for <see cref="SettledPeriods"/>.
/// An idle service's own trickle (an idle gateway allocates ~130 KiB per 10 s) adds up to
/// <see cref="WorkBytes"/> every few minutes, so it is trimmed again that often: cheap on a small heap.
/// </para>
/// </summary>
public sealed class IdleMemoryTrim : BackgroundService
{
    /// <summary>How often allocation is looked at: a service is trimmed within two periods of going quiet.</summary>
    public static readonly TimeSpan DefaultPeriod = TimeSpan.FromSeconds(10);

    /// <summary>Less than this allocated in one period is quiet (a health probe or scrape is KiBs).</summary>
    public const long QuietBytes = 1L << 20;

    /// <summary>
    /// At least this allocated since the last trim is work worth trimming after. Small, because the GC's
    /// gen0 budget here is large: the cache manager served 15,000 fuzz requests without one collection,
    /// and every byte they allocated stayed committed.
    /// </summary>
    public const long WorkBytes = 4L << 20;

    /// <summary>Quiet periods in a row after which a quiet stretch is trimmed once more (a minute at the default period).</summary>
    public const int SettledPeriods = 6;

    private static readonly Meter Meter = new(ProcessMetrics.MeterName);
    private static readonly Counter<long> Trims = Meter.CreateCounter<long>("llm_process_idle_trims", "{trim}", "Idle-time memory trims (an aggressive GC and malloc_trim after a quiet period that followed work)");

    private readonly TimeSpan _period;
    private long _lastAllocated;
    private long _allocatedAtTrim;
    private int _quietPeriods;

    public IdleMemoryTrim() : this(DefaultPeriod) { }

    /// <param name="period">How often allocation is looked at (tests use a short one).</param>
    public IdleMemoryTrim(TimeSpan period)
    {
        _period = period;
        _lastAllocated = _allocatedAtTrim = GC.GetTotalAllocatedBytes();
    }

    /// <summary>Trims done by this instance.</summary>
    public int TrimCount { get; private set; }

    /// <summary>The rule: this period was quiet, and either enough was allocated since the last trim or the
    /// service has just been quiet for <see cref="SettledPeriods"/> periods in a row (counting this one).</summary>
    public static bool ShouldTrim(long allocatedThisPeriod, long allocatedSinceTrim, int quietPeriods) =>
        allocatedThisPeriod < QuietBytes && (allocatedSinceTrim >= WorkBytes || quietPeriods == SettledPeriods);

    /// <summary>One look at allocation; trims when <see cref="ShouldTrim"/> says so. True when it trimmed.</summary>
    public bool Tick()
    {
        long now = GC.GetTotalAllocatedBytes();
        _quietPeriods = now - _lastAllocated < QuietBytes ? _quietPeriods + 1 : 0;
        bool trim = ShouldTrim(now - _lastAllocated, now - _allocatedAtTrim, _quietPeriods);
        _lastAllocated = now;
        if (!trim) return false;
        TrimNow();
        // What the trim itself allocated is not work.
        _lastAllocated = _allocatedAtTrim = GC.GetTotalAllocatedBytes();
        TrimCount++;
        Trims.Add(1);
        return true;
    }

    /// <summary>
    /// An aggressive, blocking, compacting full GC (the mode that decommits the GC's free memory rather
    /// than keeping it for the next allocations), the finalizers it queued, and a second such GC; then
    /// malloc_trim(0) where glibc provides it. The second GC is for what dead objects with finalizers
    /// (sockets, connections' handles and timers: a burst of connections leaves many) still referenced:
    /// the first GC only queues them, so everything they reach survives it, and in an idle process no GC
    /// would follow to free it (bench fuzz run 5: the gateway's heap 22.8 MiB after its last trim against
    /// 12.0 at the baseline, while a heap dump in the same state found the reachable objects back).
    /// </summary>
    public static void TrimNow()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        NativeHeap.Trim();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_period);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken)) Tick();
        }
        catch (OperationCanceledException) { }
    }
}
