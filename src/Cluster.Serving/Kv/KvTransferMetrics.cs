using System.Diagnostics;
using System.Diagnostics.Metrics;
using Cluster.Engine.KvCache;
using Cluster.Telemetry;

namespace Cluster.Serving.Kv;

/// <summary>
/// What <see cref="KvTransfer"/> moves, recorded there and nowhere else (issue 17): seconds and bytes
/// per transfer, labelled by direction (put, get) and the wire dtype, so MB/s is
/// <c>rate(bytes) / rate(seconds_sum)</c> per label set. Workers that transfer (prefill, decode) export
/// this meter beside their own. One instance per process: services run in one process (tests) add up.
/// </summary>
public static class KvTransferMetrics
{
    public const string MeterName = "LlmCluster.KvTransfer";

    private static readonly Meter Meter = new(MeterName);
    private static readonly Histogram<double> Seconds = Meter.CreateLatencyHistogram("llm_kv_transfer_seconds", "One KV transfer to/from the cache manager, first message to last");
    private static readonly Counter<long> Bytes = Meter.CreateCounter<long>("llm_kv_transfer_bytes", "By", "KV block bytes sent/received");
    // Kept out of the transfer's seconds: a get waits while a put announced for its session lands, and
    // counting that wait as transfer time would report the network slower than it is.
    private static readonly Histogram<double> GetWaitSeconds = Meter.CreateLatencyHistogram("llm_kv_get_wait_seconds",
        "A KV get from its call to the first message: the cache manager waiting for a put announced for the session, and its lookup");

    /// <param name="served">A get's source: "stored", or "streaming" when it followed a put still landing (the
    /// decode worker's prefetch, issue 17): its first message to its last then spans the rest of the put's
    /// pass, and a wire rate computed over served!="streaming" leaves it out. Null for a put.</param>
    internal static void Record(string direction, KvPrecision precision, long bytes, TimeSpan elapsed, string? served = null)
    {
        var tags = new TagList { { "direction", direction }, { "dtype", precision.Name() } };
        if (served is not null) tags.Add("served", served);
        Seconds.Record(elapsed.TotalSeconds, tags);
        Bytes.Add(bytes, tags);
    }

    internal static void RecordGetWait(TimeSpan elapsed) => GetWaitSeconds.Record(elapsed.TotalSeconds);
}
