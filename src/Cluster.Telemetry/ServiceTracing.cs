using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Cluster.Telemetry;

/// <summary>
/// One service's traces: its own <see cref="ActivitySource"/> (named per service, so that four
/// services in one process each export only their own spans) and a tracer provider that sends
/// them over OTLP/HTTP when an endpoint is configured and logs their trace ids otherwise.
/// </summary>
public sealed partial class ServiceTracing : IDisposable
{
    private readonly TracerProvider _provider;

    /// <param name="service">Service name, e.g. "gateway" (OTel resource `service.name`).</param>
    /// <param name="otlpEndpoint">Collector base URL (e.g. http://127.0.0.1:4318); null: log trace ids.</param>
    /// <param name="configure">Extra processors or exporters (tests collect spans in memory).</param>
    public ServiceTracing(string service, string? otlpEndpoint, ILogger logger, Action<TracerProviderBuilder>? configure = null)
    {
        Source = new ActivitySource("LlmCluster." + service);
        var builder = Sdk.CreateTracerProviderBuilder()
            .SetResourceBuilder(ResourceBuilder.CreateDefault().AddService("llm-" + service))
            .AddSource(Source.Name);
        if (otlpEndpoint is not null)
            builder.AddOtlpExporter(o =>
            {
                o.Protocol = OtlpExportProtocol.HttpProtobuf;
                // With an explicit endpoint the exporter posts to it as given: add the signal path.
                o.Endpoint = new Uri(new Uri(otlpEndpoint.TrimEnd('/') + "/"), "v1/traces");
            });
        else
            builder.AddProcessor(new TraceIdLogger(logger));
        configure?.Invoke(builder);
        _provider = builder.Build();
    }

    public ActivitySource Source { get; }

    public void Dispose()
    {
        _provider.Dispose(); // flushes the exporter
        Source.Dispose();
    }

    /// <summary>Without a collector the trace id is still worth having in the log, to find a request's lines in every service.</summary>
    private sealed partial class TraceIdLogger(ILogger logger) : BaseProcessor<Activity>
    {
        public override void OnEnd(Activity a)
        {
            if (a.Parent is null && a.ParentSpanId == default) Root(logger, a.TraceId.ToString(), a.DisplayName, a.Duration.TotalMilliseconds);
            else Span(logger, a.TraceId.ToString(), a.DisplayName, a.Duration.TotalMilliseconds);
        }

        [LoggerMessage(EventId = 900, Level = LogLevel.Information, Message = "trace {TraceId} {Span} {Milliseconds:F1} ms")]
        private static partial void Root(ILogger logger, string traceId, string span, double milliseconds);

        [LoggerMessage(EventId = 901, Level = LogLevel.Debug, Message = "trace {TraceId} {Span} {Milliseconds:F1} ms")]
        private static partial void Span(ILogger logger, string traceId, string span, double milliseconds);
    }
}
