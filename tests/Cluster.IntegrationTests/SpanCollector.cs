using System.Collections.Concurrent;
using System.Diagnostics;
using OpenTelemetry;

namespace Cluster.IntegrationTests;

/// <summary>An in-memory trace exporter (OpenTelemetry.Exporter.InMemory does not restore here).</summary>
public sealed class SpanCollector : BaseExporter<Activity>
{
    public ConcurrentQueue<Activity> Spans { get; } = new();

    public override ExportResult Export(in Batch<Activity> batch)
    {
        foreach (var a in batch) Spans.Enqueue(a);
        return ExportResult.Success;
    }
}
