using System.Globalization;

namespace LlmCtl.Fuzz;

/// <summary>
/// One service's memory at one moment: its resident set split as /proc/PID/status gives it (anonymous:
/// GC regions, malloc arenas, stacks; file-backed: mapped assemblies and libraries; shared: the JIT's
/// double-mapped code, which grows as new code paths are compiled and tiered up), and what its own
/// /metrics says about its GC (the live heap, what the GC has committed, how many idle trims ran).
/// </summary>
public sealed record ServiceMemory(long RssKiB, long AnonKiB, long FileKiB, long ShmemKiB, long? HeapBytes, long? CommittedBytes, long? IdleTrims)
{
    /// <summary>Reads process <paramref name="pid"/>; null once it is gone (or off Linux).</summary>
    public static ServiceMemory? Read(int pid, string? metricsText)
    {
        var status = Status(pid);
        if (status is null || !status.TryGetValue("VmRSS", out long rss)) return null;
        return new ServiceMemory(rss, status.GetValueOrDefault("RssAnon"), status.GetValueOrDefault("RssFile"), status.GetValueOrDefault("RssShmem"),
            Metric(metricsText, "llm_process_managed_heap_bytes"), Metric(metricsText, "llm_process_gc_committed_bytes"), Metric(metricsText, "llm_process_idle_trims_total"));
    }

    private static Dictionary<string, long>? Status(int pid)
    {
        try
        {
            var values = new Dictionary<string, long>();
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                int colon = line.IndexOf(':');
                if (colon > 0 && line.EndsWith(" kB", StringComparison.Ordinal) && long.TryParse(line.AsSpan(colon + 1, line.Length - colon - 4).Trim(), out long kib))
                    values[line[..colon]] = kib;
            }
            return values;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>A metric without labels from Prometheus text ("name{} value" or "name value").</summary>
    public static long? Metric(string? text, string name)
    {
        foreach (var line in (text ?? "").Split('\n'))
            if (line.StartsWith(name, StringComparison.Ordinal) && line.Length > name.Length && line[name.Length] is ' ' or '{'
                && double.TryParse(line.Split(' ')[^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                return (long)v;
        return null;
    }
}
