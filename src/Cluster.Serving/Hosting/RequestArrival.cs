using System.Diagnostics;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Cluster.Serving.Hosting;

/// <summary>
/// When a request reached the server: stamped by the first middleware of every service, before
/// routing, deserialization and the gRPC handler (whose first calls compile and JIT for hundreds of
/// milliseconds), so that latencies "from arrival" (TTFT, e2e, queue time) include that time as a
/// client sees it.
/// </summary>
public static class RequestArrival
{
    private static readonly object Key = new();

    /// <summary>The first middleware: stamps each request.</summary>
    public static IApplicationBuilder UseRequestArrival(this IApplicationBuilder app) =>
        app.Use((http, next) =>
        {
            http.Items[Key] = Stopwatch.GetTimestamp();
            return next(http);
        });

    /// <summary>The arrival timestamp (<see cref="Stopwatch.GetTimestamp"/>) of a request, or now when unstamped.</summary>
    public static long Timestamp(HttpContext? http) => http?.Items[Key] is long t ? t : Stopwatch.GetTimestamp();

    /// <inheritdoc cref="Timestamp(HttpContext?)"/>
    public static long Timestamp(ServerCallContext context)
    {
        HttpContext? http = null;
        try { http = context.GetHttpContext(); }
        catch (InvalidOperationException) { } // a context not made by Grpc.AspNetCore
        return Timestamp(http);
    }
}
