using System.Diagnostics.Metrics;
using Cluster.Telemetry;

namespace Cluster.CacheManager;

/// <summary>The cache manager's instruments (docs/METRICS.md).</summary>
internal sealed class CacheManagerMetrics : IDisposable
{
    private readonly Meter _meter = new(CacheManagerService.MeterName);

    public CacheManagerMetrics(Serving.Kv.KvSessionStore store)
    {
        _meter.CreateObservableGauge("llm_kv_stored_bytes", () => store.Bytes, "By", "Bytes of KV held");
        _meter.CreateObservableGauge("llm_kv_sessions", () => store.Sessions, "{session}", "Sessions held");
        _meter.CreateObservableGauge("llm_kv_stored_blocks", () => store.Blocks, "{block}", "Blocks (layer x session) held");
        _meter.CreateObservableGauge("llm_kv_cache_bytes", () => new Measurement<long>(store.Bytes, new KeyValuePair<string, object?>("device", "cpu")), "By", "KV memory allocated");
        CompressionRatio = _meter.CreateHistogram("llm_kv_compression_ratio", "1", "Tokens kept / tokens the session has seen, per put", tags: null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1] });
        CompressionSeconds = _meter.CreateLatencyHistogram("llm_kv_compression_seconds", "Time to apply the compression policy");
        // Sessions, not tokens: named apart from decode's llm_kv_evictions_total (tokens a policy dropped).
        _meter.CreateObservableCounter("llm_kv_session_evictions", () => Enum.GetValues<Serving.Kv.KvEvictionReason>().Select(r =>
            new Measurement<long>(store.Evictions(r), new KeyValuePair<string, object?>("reason", ReasonLabel(r)))), "{session}",
            "Sessions evicted from memory for room (ttl, lru) or deleted from the full spill (spill_full)");
        _meter.CreateObservableGauge("llm_kv_spilled_bytes", () => store.SpilledBytes, "By", "Bytes of KV in the spill directory");
        _meter.CreateObservableGauge("llm_kv_spilled_sessions", () => store.SpilledSessions, "{session}", "Sessions in the spill directory");
        Hits = _meter.CreateCounter<long>("llm_kv_cache_hits", description: "GetBlocks that found the session");
        Misses = _meter.CreateCounter<long>("llm_kv_cache_misses", description: "GetBlocks that did not");
    }

    public Histogram<double> CompressionRatio { get; }
    public Histogram<double> CompressionSeconds { get; }
    public Counter<long> Hits { get; }
    public Counter<long> Misses { get; }

    private static string ReasonLabel(Serving.Kv.KvEvictionReason reason) => reason switch
    {
        Serving.Kv.KvEvictionReason.Ttl => "ttl",
        Serving.Kv.KvEvictionReason.Lru => "lru",
        _ => "spill_full",
    };

    public void Dispose() => _meter.Dispose();
}
