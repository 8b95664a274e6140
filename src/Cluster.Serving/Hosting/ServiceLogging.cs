using Microsoft.Extensions.Logging;

namespace Cluster.Serving.Hosting;

/// <summary>
/// How much a service logs (--log-level, default warning): one line per service when it is ready is
/// printed by its host, not logged. Framework request logs (every health probe, every scrape, every
/// gRPC call of the gateway's health loop) stay at warning unless debug or trace is asked for, so
/// an idle cluster prints nothing at info.
/// </summary>
public static class ServiceLogging
{
    private static readonly string[] PerRequestCategories =
    [
        "Microsoft.AspNetCore", "System.Net.Http.HttpClient", "Grpc.AspNetCore", "Grpc.Net.Client", "Microsoft.Extensions.Diagnostics.HealthChecks",
    ];

    /// <summary>"trace", "debug", "information"/"info", "warning"/"warn", "error", "critical", "none".</summary>
    public static LogLevel Parse(string value) => value.Trim().ToLowerInvariant() switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" or "information" => LogLevel.Information,
        "warn" or "warning" => LogLevel.Warning,
        "error" => LogLevel.Error,
        "critical" => LogLevel.Critical,
        "none" => LogLevel.None,
        _ => throw new ArgumentException($"--log-level must be one of trace, debug, info, warning, error, critical, none; got '{value}'"),
    };

    public static void Configure(ILoggingBuilder logging, LogLevel level)
    {
        logging.SetMinimumLevel(level);
        var framework = level <= LogLevel.Debug ? level : (LogLevel)Math.Max((int)level, (int)LogLevel.Warning);
        foreach (var category in PerRequestCategories) logging.AddFilter(category, framework);
        // An unhealthy check is an answer (NOT_SERVING while loading or draining), not an error to log.
        if (level > LogLevel.Debug) logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", LogLevel.None);
    }
}
