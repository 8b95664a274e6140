using System.Text.Json.Nodes;
using Grpc.Core;
using Microsoft.AspNetCore.Http;

namespace Cluster.Gateway.OpenAi;

/// <summary>A request the HTTP API refuses, in OpenAI's error shape: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
internal sealed class OpenAiException(int status, string message, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static OpenAiException BadRequest(string message, string? param = null) => new(400, message, param);
}

/// <summary>
/// The one place where a failure becomes an HTTP status and OpenAI's error JSON. gRPC statuses come from
/// the shared generation path (<see cref="Serving.Hosting.StatusMapping"/> classified the exception), so
/// the HTTP API refuses exactly what gRPC refuses, with the status a REST client expects.
/// </summary>
internal static class OpenAiErrors
{
    public static OpenAiException FromStatus(Status status)
    {
        int http = status.StatusCode switch
        {
            StatusCode.InvalidArgument or StatusCode.FailedPrecondition or StatusCode.OutOfRange => 400,
            StatusCode.Unauthenticated => 401,
            StatusCode.PermissionDenied => 403,
            StatusCode.NotFound => 404,
            StatusCode.AlreadyExists or StatusCode.Aborted => 409,
            StatusCode.Cancelled => 499,
            StatusCode.Unimplemented => 501,
            StatusCode.Unavailable or StatusCode.ResourceExhausted => 503,
            StatusCode.DeadlineExceeded => 504,
            _ => 500,
        };
        // Validation names the field as "sampling.top_p must be ..." (the gRPC spelling); the HTTP API's
        // parameter is the top-level "top_p".
        string message = status.Detail.StartsWith("sampling.", StringComparison.Ordinal) ? status.Detail["sampling.".Length..] : status.Detail;
        string? param = status.Detail.StartsWith("sampling.", StringComparison.Ordinal) ? message.Split(' ')[0]
            : status.Detail.StartsWith("kv_policy", StringComparison.Ordinal) ? "kv_policy" : null;
        return new OpenAiException(http, message, param, status.StatusCode.ToString());
    }

    /// <summary>OpenAI's error "type" for a status: 4xx are the caller's (invalid_request_error), 5xx the server's.</summary>
    public static string Type(int status) => status switch
    {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        >= 400 and < 500 => "invalid_request_error",
        _ => "server_error",
    };

    public static JsonObject Body(OpenAiException e) => new()
    {
        ["error"] = new JsonObject
        {
            ["message"] = e.Message,
            ["type"] = Type(e.Status),
            ["param"] = e.Param,
            ["code"] = e.Code,
        },
    };

    public static Task WriteAsync(HttpResponse response, OpenAiException e)
    {
        response.StatusCode = e.Status;
        return OpenAiJson.WriteAsync(response, Body(e));
    }
}
