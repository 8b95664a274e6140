using System.Diagnostics;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;

namespace Cluster.Rpc;

/// <summary>
/// W3C Trace Context (https://www.w3.org/TR/trace-context/) over gRPC metadata: the client writes
/// the current activity as `traceparent`/`tracestate`, the server starts its call's activity as a
/// child of what arrived. The only place where Cluster.Rpc touches tracing.
/// </summary>
public static class TraceContext
{
    public const string TraceParentHeader = "traceparent";
    public const string TraceStateHeader = "tracestate";

    /// <summary>Writes <see cref="Activity.Current"/> (if any, W3C format) into the request headers.</summary>
    internal static void Inject(HttpRequestHeaders headers)
    {
        if (Activity.Current is not { IdFormat: ActivityIdFormat.W3C } current) return;
        // Replace rather than add: two values would arrive joined by a comma and parse as none.
        headers.Remove(TraceParentHeader);
        headers.TryAddWithoutValidation(TraceParentHeader, current.Id);
        headers.Remove(TraceStateHeader);
        if (!string.IsNullOrEmpty(current.TraceStateString)) headers.TryAddWithoutValidation(TraceStateHeader, current.TraceStateString);
    }

    /// <summary>
    /// Starts the server activity of a call named <paramref name="method"/>: a child of the
    /// caller's `traceparent`, or a new trace when there is none (or it does not parse). Null when
    /// nothing listens to <paramref name="source"/>.
    /// </summary>
    internal static Activity? StartServerActivity(ActivitySource? source, string method, IHeaderDictionary headers)
    {
        // Health checks run every few seconds per worker: spans of them would bury the requests'.
        if (source is null || !source.HasListeners() || method.StartsWith("/grpc.health.", StringComparison.Ordinal)) return null;
        string? traceParent = headers[TraceParentHeader];
        if (ActivityContext.TryParse(traceParent, headers[TraceStateHeader], isRemote: true, out var parent))
            return source.StartActivity(method, ActivityKind.Server, parent);
        // No caller context: a root. Activity.Current may hold ASP.NET Core's request activity,
        // which is not exported; a span under it would look like a child of a missing parent.
        Activity.Current = null;
        return source.StartActivity(method, ActivityKind.Server, default(ActivityContext));
    }
}
