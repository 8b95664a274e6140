using Cluster.Serving.Hosting;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.Grpc.Tests.Server;

/// <summary>
/// The idle-time trim that gives back what a burst left committed (issue 21's fuzz: RSS not returning
/// to baseline was the GC's free regions and malloc arenas, not live objects).
/// </summary>
public sealed class IdleMemoryTrimTests(ITestOutputHelper output)
{
    [Fact]
    public void The_trim_decommits_the_free_regions_a_burst_left_behind()
    {
        // A burst: 256 MiB of small-object arrays alive at once, then dropped; a full GC as the runtime
        // runs one (blocking, not aggressive) frees them but keeps their regions committed for reuse.
        Burst(4096, 64 * 1024 - 64);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
        var afterGc = GC.GetGCMemoryInfo();

        IdleMemoryTrim.TrimNow();
        var afterTrim = GC.GetGCMemoryInfo();

        output.WriteLine($"committed after a plain full GC {afterGc.TotalCommittedBytes >> 20} MiB (heap {afterGc.HeapSizeBytes >> 20}), after the trim {afterTrim.TotalCommittedBytes >> 20} MiB (heap {afterTrim.HeapSizeBytes >> 20})");
        // Other tests of this assembly may run beside this one, so the bound leaves them 64 MiB.
        Assert.True(afterTrim.TotalCommittedBytes < afterTrim.HeapSizeBytes + (64L << 20),
            $"the trim left {afterTrim.TotalCommittedBytes >> 20} MiB committed around a {afterTrim.HeapSizeBytes >> 20} MiB heap");
        Assert.True(afterTrim.TotalCommittedBytes < afterGc.TotalCommittedBytes - (128L << 20),
            $"committed {afterGc.TotalCommittedBytes >> 20} MiB after the plain GC, {afterTrim.TotalCommittedBytes >> 20} MiB after the trim");
    }

    /// <summary>
    /// Dead objects with finalizers keep what they reference alive through the GC that finds them dead (it
    /// only queues their finalizers); in an idle process no GC follows, so a trim must collect again after
    /// the finalizers ran. 64 MiB held only by dropped finalizable objects must be gone after one trim.
    /// </summary>
    [Fact]
    public void The_trim_frees_what_dead_objects_with_finalizers_held()
    {
        IdleMemoryTrim.TrimNow();
        long before = GC.GetTotalMemory(forceFullCollection: false);
        DropFinalizable(64, 1 << 20);

        IdleMemoryTrim.TrimNow();
        long after = GC.GetTotalMemory(forceFullCollection: false);
        output.WriteLine($"heap {before >> 20} MiB before, {after >> 20} MiB after dropping 64 MiB held by finalizable objects and one trim");
        // Other tests of this assembly may run beside this one, so the bound leaves them 32 MiB.
        Assert.True(after < before + (32L << 20), $"heap {before >> 20} MiB before, {after >> 20} MiB after the trim: what the finalizable objects held survived it");
    }

    private sealed class Finalizable(byte[] held)
    {
        public readonly byte[] Held = held;
        ~Finalizable() { }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void DropFinalizable(int count, int size)
    {
        var objects = new Finalizable[count];
        for (int i = 0; i < count; i++) objects[i] = new Finalizable(new byte[size]);
        GC.KeepAlive(objects);
    }

    [Theory]
    [InlineData(0, 0, 1, false)]                      // idle from the start: nothing to give back
    [InlineData(512 << 10, (4L << 20) - 1, 1, false)] // quiet, but little work since the last trim
    [InlineData(512 << 10, 4L << 20, 1, true)]        // quiet after work: trim
    [InlineData(1L << 20, 1L << 30, 0, false)]        // still busy: never pause a working service
    [InlineData(0, 0, IdleMemoryTrim.SettledPeriods, true)]      // a minute quiet: once more, for what was released since
    [InlineData(0, 0, IdleMemoryTrim.SettledPeriods + 1, false)] // and not again
    public void The_rule_trims_once_a_service_goes_quiet_after_work_and_once_when_settled(long thisPeriod, long sinceTrim, int quietPeriods, bool trim) =>
        Assert.Equal(trim, IdleMemoryTrim.ShouldTrim(thisPeriod, sinceTrim, quietPeriods));

    [Fact]
    public void A_tick_trims_after_work_once_quiet_and_once_more_when_settled()
    {
        var trimmer = new IdleMemoryTrim(TimeSpan.FromHours(1)); // ticked by hand
        Burst(64, 512 * 1024); // 32 MiB this period
        Assert.False(trimmer.Tick(), "a period that allocated 32 MiB is not quiet");

        // Quiet: tests running beside this one may allocate, so a few tries.
        bool trimmed = false;
        for (int i = 0; i < 50 && !trimmed; i++)
        {
            Thread.Sleep(20);
            trimmed = trimmer.Tick();
        }
        Assert.True(trimmed, "no quiet period in 50 tries");
        Assert.False(trimmer.Tick(), "no work since the trim, so no second one yet");
        Assert.Equal(1, trimmer.TrimCount);

        // Quiet on: one more trim when the stretch has lasted SettledPeriods, then none.
        for (int i = 0; i < 50 && trimmer.TrimCount == 1; i++)
        {
            Thread.Sleep(20);
            trimmer.Tick();
        }
        Assert.Equal(2, trimmer.TrimCount);
        for (int i = 0; i < IdleMemoryTrim.SettledPeriods; i++) Assert.False(trimmer.Tick(), "a settled stretch is trimmed once");
    }

    [Fact]
    public async Task Every_service_runs_the_trim()
    {
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], new Dictionary<string, string?>());
        await using var running = await ServiceHost.StartAsync(options, (_, _) => Task.FromResult<IClusterService>(new NoService()));
        Assert.Contains(running.App.Services.GetServices<IHostedService>(), s => s is IdleMemoryTrim);
    }

    /// <summary>Arrays alive together, dropped on return (a method of its own, so no local of the
    /// caller's frame keeps them reachable).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void Burst(int count, int size)
    {
        var alive = new List<byte[]>(count);
        for (int i = 0; i < count; i++) alive.Add(new byte[size]);
        GC.KeepAlive(alive);
    }

    private sealed class NoService : IClusterService
    {
        public void MapGrpcServices(IEndpointRouteBuilder endpoints) { }
        public bool IsReady => true;
        public IReadOnlyList<string> MeterNames => [];
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
