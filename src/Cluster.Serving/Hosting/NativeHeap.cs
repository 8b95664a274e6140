using System.Runtime.InteropServices;

namespace Cluster.Serving.Hosting;

/// <summary>
/// glibc's malloc, the one place services talk to it: where the C library is not glibc (musl, other
/// systems) both calls do nothing.
/// </summary>
public static partial class NativeHeap
{
    private const int M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8;
    private static bool _unavailable = !OperatingSystem.IsLinux();
    private static int _configuredForServices;

    /// <summary>
    /// Settings every service runs with (ServiceHost), so that what its threads free goes back to the OS
    /// once IdleMemoryTrim runs. Measured on the gateway under the front-door fuzz (bench/RESULTS.md,
    /// issue 21, run 7's investigation): something freed an 804 KiB mmapped block, so glibc's dynamic
    /// thresholds had risen to an 804 KiB mmap threshold and a 1.6 MiB trim threshold; the top chunks of
    /// the 16 per-thread arenas (8 per core) then held up to 1.6 MiB of freed memory each (7.5 MiB in all),
    /// which malloc_trim does not touch (it trims only the main arena's top; a thread arena's top shrinks
    /// only inside free(), and only past the trim threshold). Fixed thresholds (setting them turns the
    /// dynamic ones off) shrink a thread arena's top to about 128 KiB whenever a free merges 64 KiB or
    /// more into it (smaller frees do not trim, so a top can still hold more until one does), keep blocks
    /// of 128 KiB and more out of the arenas (they are unmapped when freed), and two arenas bound how
    /// many tops and fragmented arenas there can be (threads created later share them; the few the
    /// runtime created before this ran stay). The cost: a syscall per native allocation of 128 KiB or
    /// more, which services make rarely. For a decode worker these are also what keeps its KV caches
    /// (NativeMemory, 100 KiB to a few MiB a layer, freed on thread-pool threads) from staying in the
    /// arenas after they are freed: with glibc's defaults its resident memory grew far past its KV
    /// budget under load (DecodeAdmissionTests, 64 streams).
    /// </summary>
    public static void ConfigureForServices()
    {
        if (_unavailable || Interlocked.Exchange(ref _configuredForServices, 1) != 0) return;
        try
        {
            MallOpt(M_TRIM_THRESHOLD, 128 << 10);
            MallOpt(M_MMAP_THRESHOLD, 128 << 10);
            MallOpt(M_ARENA_MAX, 2);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            _unavailable = true;
        }
    }

    /// <summary>
    /// For a decode worker, whose paged KV caches are reallocated one block larger every block's worth
    /// of tokens (ContinuousBatcher): every size from one block's layer up (kilobytes for a small model),
    /// each freed when the next is made. Below the mmap threshold these sizes land in the arenas, whose
    /// holes the next, larger one does not fit: 64 streams against a 17 MiB KV pool grew the worker's
    /// native memory by 216 MiB (DecodeAdmissionTests); with every allocation of a page or more mapped,
    /// a freed cache goes back to the OS at once (49 MiB). The cost: a syscall per such allocation.
    /// </summary>
    public static void MapFromOnePage()
    {
        if (_unavailable) return;
        try { MallOpt(M_MMAP_THRESHOLD, 4 << 10); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { _unavailable = true; }
    }

    /// <summary>malloc_trim(0): returns the free pages of every malloc arena to the OS (IdleMemoryTrim).</summary>
    public static void Trim()
    {
        if (_unavailable) return;
        try { MallocTrim(0); }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException) { _unavailable = true; }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallOpt(int option, int value);

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);
}
