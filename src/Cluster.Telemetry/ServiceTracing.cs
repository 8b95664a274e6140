using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Cluster.Telemetry;

/// <summary>
/// One service's traces: its own <see cref="ActivitySource"/> (named per service, "LlmCluster.gateway",
/// so a span says which service ran it even when four services share a process) for the span of each
/// gRPC call, and where they go: OTLP/HTTP when an endpoint is configured, otherwise their trace ids
/// in the log.
/// </summary>
public sealed partial class ServiceTracing(string service, string? otlpEndpoint, ILogger logger) : IDisposable
{
    public ActivitySource Source { get; } = new("LlmCluster." + service);

    /// <summary>Adds the source, the resource and the exporter to a tracer provider.</summary>
    public void Configure(TracerProviderBuilder builder)
    {
        builder.SetResourceBuilder(ResourceBuilder.CreateDefault().AddService("llm-" + service)).AddSource(Source.Name);
        if (otlpEndpoint is not null)
            builder.AddOtlpExporter(o =>
            {
                o.Protocol = OtlpExportProtocol.HttpProtobuf;
                // With an explicit endpoint the exporter posts to it as given: add the signal path.
                o.Endpoint = new Uri(new Uri(otlpEndpoint.TrimEnd('/') + "/"), "v1/traces");
            });
        else
            builder.AddProcessor(new TraceIdLogger(Source.Name, logger));
    }

    public void Dispose() => Source.Dispose();

    /// <summary>Without a collector the trace id is still worth having in the log, to find a request's lines in every service.</summary>
    private sealed partial class TraceIdLogger(string source, ILogger logger) : BaseProcessor<Activity>
    {
        public override void OnEnd(Activity a)
        {
            if (a.Source.Name != source) return; // the instrumentations' spans are in every service's provider
            Span(logger, a.TraceId.ToString(), a.DisplayName, a.Duration.TotalMilliseconds);
        }

        [LoggerMessage(EventId = 900, Level = LogLevel.Debug, Message = "trace {TraceId} {Span} {Milliseconds:F1} ms")]
        private static partial void Span(ILogger logger, string traceId, string span, double milliseconds);
    }
}
