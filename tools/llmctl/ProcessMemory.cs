using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;

namespace LlmCtl;

/// <summary>The memory of another process, for the benchmarks that watch a cluster's services:
/// its resident size from /proc, and a full garbage collection induced in a .NET process from outside.</summary>
internal static class ProcessMemory
{
    /// <summary>VmRSS of a process from /proc (Linux), in KiB; null elsewhere or once it is gone.</summary>
    public static long? RssKiB(int pid) => StatusKiB(pid, "VmRSS:");

    /// <summary>
    /// The resident memory split as /proc/PID/status gives it, in KiB: anonymous (heaps, stacks, the GC's
    /// regions, native allocators) and file-backed (mapped assemblies and native libraries: code paths
    /// run for the first time page more of them in, which is growth but not a leak).
    /// </summary>
    public static (long Anon, long File)? RssPartsKiB(int pid) =>
        StatusKiB(pid, "RssAnon:") is long a && StatusKiB(pid, "RssFile:") is long f ? (a, f) : null;

    private static long? StatusKiB(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith(field, StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(field.Length).Trim().TrimEnd("kB").Trim());
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>The runtime's GCHeapCollect keyword: enabling it on an EventPipe session makes the runtime
    /// run a blocking full collection (what dotnet-gcdump relies on).</summary>
    private const long GcHeapCollectKeyword = 0x800000;

    /// <summary>
    /// Makes the .NET process <paramref name="pid"/> run a full blocking garbage collection through its
    /// diagnostics port, so that its RSS afterwards reflects what it still references rather than when
    /// its GC last happened to run (an idle process does not collect). False when the process has no
    /// diagnostics port (not .NET, gone, or DOTNET_EnableDiagnostics=0).
    /// </summary>
    public static bool TryInduceFullGc(int pid, TimeSpan wait)
    {
        try
        {
            var client = new DiagnosticsClient(pid);
            var provider = new EventPipeProvider("Microsoft-Windows-DotNETRuntime", EventLevel.Informational, GcHeapCollectKeyword);
            using var session = client.StartEventPipeSession([provider], requestRundown: false, circularBufferMB: 16);
            // The events are not needed; the stream is drained so the runtime never blocks on a full buffer.
            var drain = Task.Run(() => session.EventStream.CopyTo(Stream.Null));
            Thread.Sleep(wait);
            session.Stop();
            drain.Wait(TimeSpan.FromSeconds(5));
            return true;
        }
        catch (Exception e) when (e is ServerNotAvailableException or UnsupportedCommandException or IOException or TimeoutException or ServerErrorException or AggregateException)
        {
            return false;
        }
    }
}
