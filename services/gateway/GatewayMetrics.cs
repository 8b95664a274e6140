using System.Diagnostics.Metrics;
using Cluster.Telemetry;

namespace Cluster.Gateway;

/// <summary>The gateway's instruments, with vLLM's semantics (docs/METRICS.md).</summary>
internal sealed class GatewayMetrics : IDisposable
{
    private readonly Meter _meter = new(GatewayService.MeterName);

    public GatewayMetrics(Func<IEnumerable<Measurement<int>>> workersUp)
    {
        TimeToFirstToken = _meter.CreateLatencyHistogram("llm_time_to_first_token_seconds", "Request arrival to first token sent");
        InterTokenLatency = _meter.CreateLatencyHistogram("llm_inter_token_latency_seconds", "Gap between two consecutive streamed tokens");
        TimePerOutputToken = _meter.CreateLatencyHistogram("llm_time_per_output_token_seconds", "Per request: (e2e - ttft) / (output tokens - 1)");
        EndToEnd = _meter.CreateLatencyHistogram("llm_e2e_request_latency_seconds", "Request arrival to completion");
        QueueTime = _meter.CreateLatencyHistogram("llm_request_queue_time_seconds", "Request arrival to start of prefill");
        Running = _meter.CreateUpDownCounter<int>("llm_requests_running", description: "Requests streaming now");
        Waiting = _meter.CreateUpDownCounter<int>("llm_requests_waiting", description: "Requests accepted, not yet in prefill");
        PromptTokens = _meter.CreateCounter<long>("llm_prompt_tokens", description: "Prompt tokens received");
        GenerationTokens = _meter.CreateCounter<long>("llm_generation_tokens", description: "Tokens streamed to clients");
        Success = _meter.CreateCounter<long>("llm_request_success", description: "Finished requests by finish reason");
        Errors = _meter.CreateCounter<long>("llm_request_errors", description: "Failed requests by gRPC status");
        Resumes = _meter.CreateCounter<long>("llm_resumes", description: "Resume calls");
        TurnRoutes = _meter.CreateCounter<long>("llm_turn_routes", description: "Conversations' later turns by where their prompt ran: prefill, or the decode worker that held the KV (decode_holder) or another one (decode_other)");
        _meter.CreateObservableGauge("llm_worker_up", workersUp, description: "1 while a worker passes health checks");
    }

    public Histogram<double> TimeToFirstToken { get; }
    public Histogram<double> InterTokenLatency { get; }
    public Histogram<double> TimePerOutputToken { get; }
    public Histogram<double> EndToEnd { get; }
    public Histogram<double> QueueTime { get; }
    public UpDownCounter<int> Running { get; }
    public UpDownCounter<int> Waiting { get; }
    public Counter<long> PromptTokens { get; }
    public Counter<long> GenerationTokens { get; }
    public Counter<long> Success { get; }
    public Counter<long> Errors { get; }
    public Counter<long> Resumes { get; }
    public Counter<long> TurnRoutes { get; }

    public void Dispose() => _meter.Dispose();
}
