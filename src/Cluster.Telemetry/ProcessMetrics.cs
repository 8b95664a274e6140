using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Reflection;

namespace Cluster.Telemetry;

/// <summary>
/// Metrics every service exports: resident and managed memory, GC collections, and build info (a
/// constant 1 whose labels carry the service and version, the Prometheus convention).
/// </summary>
public sealed class ProcessMetrics : IDisposable
{
    public const string MeterName = "LlmCluster.Process";
    private readonly Meter _meter = new(MeterName);

    public ProcessMetrics(string service)
    {
        var version = Assembly.GetEntryAssembly()?.GetName().Version?.ToString() ?? "unknown";
        _meter.CreateObservableGauge("llm_process_resident_memory_bytes", () => Process.GetCurrentProcess().WorkingSet64, "By", "Resident set size of the process");
        _meter.CreateObservableGauge("llm_process_managed_heap_bytes", () => GC.GetTotalMemory(false), "By", "Bytes in the .NET managed heap");
        // Committed by the GC beyond its live heap is what it keeps for later allocations (free regions, the
        // gen0 budget): RSS that no object holds. The idle trim gives it back (Cluster.Serving IdleMemoryTrim).
        _meter.CreateObservableGauge("llm_process_gc_committed_bytes", () => GC.GetGCMemoryInfo().TotalCommittedBytes, "By", "Memory the .NET GC has committed (live heap, fragmentation and free regions it keeps)");
        _meter.CreateObservableCounter("llm_process_allocated_bytes", () => GC.GetTotalAllocatedBytes(), "By", "Bytes allocated on the managed heap since the process started");
        _meter.CreateObservableCounter("llm_process_gc_collections", () => Enumerable.Range(0, GC.MaxGeneration + 1)
            .Select(g => new Measurement<long>(GC.CollectionCount(g), new KeyValuePair<string, object?>("generation", g.ToString()))), "{collection}", "Garbage collections by generation");
        _meter.CreateObservableGauge("llm_build_info", () => new Measurement<int>(1,
            new KeyValuePair<string, object?>("service", service), new KeyValuePair<string, object?>("version", version),
            new KeyValuePair<string, object?>("runtime", Environment.Version.ToString())), description: "Build information (always 1)");
    }

    public void Dispose() => _meter.Dispose();
}
