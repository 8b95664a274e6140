using System.Diagnostics.Metrics;
using Cluster.Telemetry;

namespace Cluster.Decode;

/// <summary>The decode worker's instruments (docs/METRICS.md).</summary>
internal sealed class DecodeMetrics : IDisposable
{
    private readonly Meter _meter = new(DecodeService.MeterName);

    public DecodeMetrics(Func<int> running, long weightBytes, Engine.Scheduling.KvAdmission admission, Serving.Kv.ResidentKv resident)
    {
        BatchSize = _meter.CreateHistogram("llm_decode_batch_size", "{sequence}", "Sequences in each decode step", tags: null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128] });
        StepSeconds = _meter.CreateLatencyHistogram("llm_decode_step_seconds", "One batched decode step");
        // vLLM's request_queue_time: the wait a full pool imposes, where starvation would show.
        QueueWaitSeconds = _meter.CreateLatencyHistogram("llm_decode_queue_wait_seconds", "Arrival at the decode worker to admission into its KV pool (0 when there was room)");
        Tokens = _meter.CreateCounter<long>("llm_generation_tokens", description: "Tokens generated");
        Evictions = _meter.CreateCounter<long>("llm_kv_evictions", description: "Tokens evicted by the compression policy");
        Rebuilds = _meter.CreateCounter<long>("llm_kv_rebuilds", description: "Sequences whose KV the cache manager lacked, rebuilt from the prompt");
        Prefetches = _meter.CreateCounter<long>("llm_kv_prefetches", description: "Prompts' KV fetched while prefill still ran (outcome started), and Decode calls that started from one (outcome used)");
        ResidentHits = _meter.CreateCounter<long>("llm_kv_resident_hits", description: "Conversation turns started from the KV this worker kept when the previous turn ended here (no transfer)");
        _meter.CreateObservableGauge("llm_kv_resident_bytes", () => resident.Bytes, "By", "KV of finished conversations kept for their next turn (at most --resident-kv)");
        _meter.CreateObservableGauge("llm_decode_sequences_running", running, "{sequence}", "Sequences in the batch");
        // From the block pool: a paged cache holds exactly its blocks, so the pool's use is the KV memory.
        _meter.CreateObservableGauge("llm_kv_cache_usage_ratio", () => admission.Usage, "1", "KV blocks in use / blocks in the pool");
        _meter.CreateObservableGauge("llm_kv_cache_bytes", () => new Measurement<long>(admission.UsedBytes, new KeyValuePair<string, object?>("device", "cpu")), "By", "KV memory held (the pool's blocks in use)");
        _meter.CreateObservableGauge("llm_kv_reserved_bytes", () => admission.UsedBytes, "By", "KV blocks held by running sequences and kept caches (at most llm_kv_budget_bytes)");
        _meter.CreateObservableGauge("llm_kv_budget_bytes", () => admission.BudgetBytes, "By", "The decode worker's KV block pool (--kv-memory, whole blocks)");
        _meter.CreateObservableGauge("llm_decode_queue_length", () => admission.Waiting, "{sequence}", "New sequences waiting for KV blocks");
        _meter.CreateObservableGauge("llm_decode_sequences_preempted", () => admission.Suspended, "{sequence}", "Preempted sequences waiting to resume by recomputation");
        _meter.CreateObservableCounter("llm_decode_preemptions", () => admission.Preemptions, "{sequence}", "Sequences preempted (blocks dropped, recomputed later) because the KV pool was full");
        _meter.CreateObservableCounter("llm_decode_refused", () => admission.Refused, "{request}", "Requests refused with RESOURCE_EXHAUSTED (queue full, or larger than the budget)");
        _meter.CreateObservableGauge("llm_model_weights_bytes", () => new Measurement<long>(weightBytes, new KeyValuePair<string, object?>("device", "cpu")), "By", "Weights resident");
    }

    public Histogram<double> BatchSize { get; }
    public Histogram<double> StepSeconds { get; }
    public Histogram<double> QueueWaitSeconds { get; }
    public Counter<long> Tokens { get; }
    public Counter<long> Evictions { get; }
    public Counter<long> Rebuilds { get; }
    public Counter<long> ResidentHits { get; }
    public Counter<long> Prefetches { get; }

    public void Dispose() => _meter.Dispose();
}
