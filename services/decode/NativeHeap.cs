using System.Runtime.InteropServices;

namespace Cluster.Decode;

/// <summary>
/// glibc malloc settings for a decode worker. Its KV caches (NativeMemory, 100 KiB to a few MiB a
/// layer) are allocated and freed as sequences come and go, from whichever thread-pool thread restores
/// them. By default glibc raises its mmap threshold to the size of the largest block freed (so later
/// caches come from heap arenas instead of their own mappings) and keeps up to 8 arenas per core; the
/// arenas then hold on to freed caches, and the worker's resident memory grew far past its KV budget
/// under load (DecodeAdmissionTests, 64 streams). A fixed threshold returns every freed cache to the
/// system at once, and two arenas bound what the remaining small allocations can strand.
/// </summary>
internal static partial class NativeHeap
{
    private const int M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8;

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallOpt(int option, int value);

    private static int _applied;

    public static void Configure()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref _applied, 1) != 0) return;
        try
        {
            MallOpt(M_MMAP_THRESHOLD, 128 << 10);
            MallOpt(M_ARENA_MAX, 2);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (musl has its own allocator): nothing to set.
        }
    }
}
