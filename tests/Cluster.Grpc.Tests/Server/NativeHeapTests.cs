using System.Globalization;
using System.Runtime.InteropServices;
using Cluster.Serving.Hosting;
using Microsoft.AspNetCore.Routing;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.Grpc.Tests.Server;

/// <summary>
/// The glibc settings every service runs with (NativeHeap.ConfigureForServices, from ServiceHost): the
/// fuzzed gateway's thread arenas kept 7.5 MiB of freed memory in their top chunks, which malloc_trim
/// does not return, because a freed 804 KiB block had raised glibc's dynamic thresholds (bench/RESULTS.md,
/// issue 21, run 7). These tests make the same happen (free a large block) in a process where a service
/// started, and check that freed memory still goes back. glibc on Linux only. They run apart from the other
/// tests, whose allocations share the services' two arenas (in CI runs 2.4-4.1 MiB of 8 freed stayed resident).
/// </summary>
[Collection(nameof(NativeHeapTests))]
public sealed class NativeHeapTests(ITestOutputHelper output)
{
    [Fact]
    public async Task In_a_service_process_a_freed_large_block_does_not_pull_later_blocks_into_the_arenas()
    {
        if (!IsGlibc()) return;
        await StartServiceAsync();
        // glibc raises its mmap threshold to the size of a freed mmapped block (here 16 MiB) unless it is fixed.
        Marshal.FreeHGlobal(Marshal.AllocHGlobal(16 << 20)); // malloc and free

        // 12 MiB: above the fixed threshold, below the risen one, and larger than any free space an arena
        // has here (a smaller block may be carved from free space the other tests left, mmap threshold or not).
        var p = Marshal.AllocHGlobal(12 << 20);
        bool mmapped = (Marshal.ReadInt64(p, -8) & 2) != 0; // the chunk header's IS_MMAPPED bit
        Marshal.FreeHGlobal(p);
        Assert.True(mmapped, "a 12 MiB block came from a malloc arena: the dynamic mmap threshold rose past it");
    }

    /// <summary>
    /// 24 MiB of 8 KiB blocks (below the 32 MiB trim threshold a freed 16 MiB block raises glibc's to), allocated and freed on one thread (so they end in an arena and merge into
    /// its top chunk, as a burst's buffers do), after a 16 MiB block was freed (what raised the gateway's
    /// thresholds): after a trim the arena's resident memory must be back, but for what other threads
    /// allocated in the same arena meanwhile (two arenas are shared by every thread: 2-4 MiB in CI runs
    /// with 8 MiB of blocks). With glibc's dynamic thresholds the top kept all of it resident.
    /// </summary>
    [Fact]
    public async Task In_a_service_process_what_a_thread_freed_goes_back_after_a_trim()
    {
        if (!IsGlibc()) return;
        await StartServiceAsync();
        Marshal.FreeHGlobal(Marshal.AllocHGlobal(16 << 20)); // malloc and free

        long before = 0, after = 0;
        nuint mapping = 0;
        var thread = new Thread(() =>
        {
            var blocks = new nint[3072];
            for (int i = 0; i < blocks.Length; i++)
            {
                blocks[i] = Marshal.AllocHGlobal(8 << 10);
                for (int o = 0; o < 8 << 10; o += 1024) Marshal.WriteByte(blocks[i], o, 1); // resident
            }
            mapping = (nuint)(nint)blocks[^1];
            before = MappingRssKiB(mapping);
            for (int i = blocks.Length - 1; i >= 0; i--) Marshal.FreeHGlobal(blocks[i]);
            NativeHeap.Trim();
            after = MappingRssKiB(mapping);
        });
        thread.Start();
        thread.Join();
        output.WriteLine($"the arena mapping holding the blocks: {before} KiB resident with 24 MiB allocated, {after} KiB after freeing them and a trim");
        Assert.True(before >= 21 << 10, $"only {before} KiB resident with the blocks allocated: not measuring the right mapping");
        Assert.True(after <= before - (16 << 10), $"{before} KiB before, {after} KiB after freeing 24 MiB and a trim: the arena kept it");
    }

    private static async Task StartServiceAsync()
    {
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], new Dictionary<string, string?>());
        await using var running = await ServiceHost.StartAsync(options, (_, _) => Task.FromResult<IClusterService>(new NoService()));
    }

    private static bool IsGlibc()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return NativeLibrary.TryGetExport(NativeLibrary.Load("libc.so.6"), "malloc_trim", out _); }
        catch (DllNotFoundException) { return false; }
    }

    /// <summary>Rss of the /proc/self/smaps mapping that holds <paramref name="address"/>; 0 when none does
    /// (the main arena's heap shrank below it).</summary>
    private static long MappingRssKiB(nuint address)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, null, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, null, out ulong end))
                inside = start <= address && address < end;
            else if (inside && line.StartsWith("Rss:", StringComparison.Ordinal))
                return long.Parse(line.AsSpan(4, line.Length - 4 - 3).Trim(), CultureInfo.InvariantCulture);
        }
        return 0;
    }

    private sealed class NoService : IClusterService
    {
        public void MapGrpcServices(IEndpointRouteBuilder endpoints) { }
        public bool IsReady => true;
        public IReadOnlyList<string> MeterNames => [];
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}

[CollectionDefinition(nameof(NativeHeapTests), DisableParallelization = true)]
public sealed class NativeHeapCollection;
