namespace LlmCtl;

/// <summary>The memory of another process, for the benchmarks that watch a cluster's services: its
/// resident size from /proc.</summary>
internal static class ProcessMemory
{
    /// <summary>VmRSS of a process from /proc (Linux), in KiB; null elsewhere or once it is gone.</summary>
    public static long? RssKiB(int pid) => StatusKiB(pid, "VmRSS:");

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
}
