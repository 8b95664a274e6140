using System.Runtime.InteropServices;

namespace Cluster.Serving.Hosting;

/// <summary>
/// glibc's malloc, the one place services talk to it: where the C library is not glibc (musl, other
/// systems) both calls do nothing.
/// </summary>
public static partial class NativeHeap
{
    private const int M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8;
    private static bool _unavailable = !OperatingSystem.IsLinux();
    private static int _configured;

    /// <summary>
    /// Settings for a process that allocates and frees large native blocks from many threads (a decode
    /// worker's KV caches: NativeMemory, 100 KiB to a few MiB a layer, restored on thread-pool threads).
    /// By default glibc raises its mmap threshold to the size of the largest block freed (so later caches
    /// come from heap arenas instead of their own mappings) and keeps up to 8 arenas per core; the arenas
    /// then hold on to freed caches, and the worker's resident memory grew far past its KV budget under
    /// load (DecodeAdmissionTests, 64 streams). A fixed threshold returns every freed cache to the system
    /// at once, and two arenas bound what the remaining small allocations can strand.
    /// </summary>
    public static void ConfigureForLargeBlocks()
    {
        if (_unavailable || Interlocked.Exchange(ref _configured, 1) != 0) return;
        try
        {
            MallOpt(M_MMAP_THRESHOLD, 128 << 10);
            MallOpt(M_ARENA_MAX, 2);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            _unavailable = true;
        }
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
