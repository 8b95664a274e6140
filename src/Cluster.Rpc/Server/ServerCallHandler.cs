using Cluster.Rpc.Protocol;
using Google.Protobuf;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.Logging;

namespace Cluster.Rpc.Server;

/// <summary>
/// What every call shape shares: per-call limits, grpc-encoding and grpc-timeout handling,
/// cancellation, and the one place where an exception becomes a status. Subclasses (one per
/// method shape) only read requests, invoke the handler and write responses.
/// </summary>
internal abstract class ServerCallHandler
{
    // Past ~24 days CancelAfter throws; such a deadline is effectively none.
    private static readonly TimeSpan MaxTimer = TimeSpan.FromMilliseconds(int.MaxValue - 1);

    protected ServerCallHandler(string method, RpcServerOptions options, ILogger logger)
    {
        Method = method;
        Options = options;
        Logger = logger;
    }

    public string Method { get; }

    protected RpcServerOptions Options { get; }

    protected ILogger Logger { get; }

    public async Task HandleAsync(HttpContext http)
    {
        DisablePerRequestLimits(http);
        var request = http.Request;

        // Spec: an encoding the server does not support is answered UNIMPLEMENTED, listing ours.
        string? encoding = request.Headers[GrpcProtocol.EncodingHeader];
        if (!string.IsNullOrEmpty(encoding) && encoding != GrpcProtocol.Identity && encoding != GrpcProtocol.Gzip)
        {
            http.Response.Headers[GrpcProtocol.AcceptEncodingHeader] = GrpcProtocol.SupportedEncodings;
            ServerResponse.WriteStatus(http.Response, StatusCode.Unimplemented, $"Unsupported grpc-encoding '{encoding}'", null, null);
            return;
        }

        DateTime? deadline = null;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        if (GrpcTimeout.TryParse(request.Headers[GrpcProtocol.TimeoutHeader], out var timeout) && timeout < MaxTimer)
        {
            deadline = DateTime.UtcNow + timeout;
            cts.CancelAfter(timeout);
        }

        using var activity = TraceContext.StartServerActivity(Options.ActivitySource, Method, request.Headers);
        var context = new ServerCallContext(http, Method, deadline, ReadMetadata(request.Headers), cts.Token);
        http.Response.ContentType = GrpcProtocol.ContentType;

        StatusCode code;
        string? detail = null;
        Metadata trailers;
        try
        {
            await HandleCallAsync(http, context, encoding).ConfigureAwait(false);
            code = StatusCode.OK;
            trailers = context.ResponseTrailers;
        }
        catch (Exception ex)
        {
            (code, detail, trailers) = ToStatus(ex, http, cts);
        }
        activity?.SetTag("rpc.grpc.status_code", (int)code);
        if (code != StatusCode.OK) activity?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, code.ToString());

        if (http.RequestAborted.IsCancellationRequested)
        {
            // The stream is already reset; there is no one to send a status to.
            RpcServerLog.ClientCancelled(Logger, Method);
            return;
        }
        if (cts.IsCancellationRequested && deadline is not null)
        {
            // Spec: the call fails with DEADLINE_EXCEEDED once the deadline passed, whatever the handler did.
            RpcServerLog.DeadlineExceeded(Logger, Method);
            (code, detail) = (StatusCode.DeadlineExceeded, "Deadline Exceeded");
        }
        ServerResponse.WriteStatus(http.Response, code, detail, context.ResponseHeaders, trailers);
    }

    /// <summary>Reads the request(s), runs the user handler, writes the response(s).</summary>
    protected abstract Task HandleCallAsync(HttpContext http, ServerCallContext context, string? encoding);

    /// <summary>Reads the single request message of a unary or server-streaming call.</summary>
    protected async Task<T> ReadSingleRequestAsync<T>(HttpContext http, MessageParser<T> parser, string? encoding, CancellationToken ct)
        where T : class, IMessage<T>
    {
        var reader = http.Request.BodyReader;
        var message = await GrpcFraming.ReadMessageAsync(reader, parser, Options.MaxReceiveMessageSize, encoding, ct).ConfigureAwait(false)
            ?? throw new RpcException(StatusCode.Internal, "Incomplete request: no message");
        if (await GrpcFraming.ReadMessageAsync(reader, parser, Options.MaxReceiveMessageSize, encoding, ct).ConfigureAwait(false) is not null)
            throw new RpcException(StatusCode.Internal, "More than one request message for a single-request method");
        return message;
    }

    /// <summary>The requests of a client-streaming call, as they arrive.</summary>
    protected async IAsyncEnumerable<T> ReadRequestsAsync<T>(HttpContext http, MessageParser<T> parser, string? encoding, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
        where T : class, IMessage<T>
    {
        while (await GrpcFraming.ReadMessageAsync(http.Request.BodyReader, parser, Options.MaxReceiveMessageSize, encoding, ct).ConfigureAwait(false) is { } message)
            yield return message;
    }

    /// <summary>All exception-to-status mapping of the server, in one place.</summary>
    private (StatusCode, string, Metadata) ToStatus(Exception ex, HttpContext http, CancellationTokenSource cts)
    {
        switch (ex)
        {
            case RpcException rpc:
                RpcServerLog.CallFailed(Logger, Method, rpc.StatusCode, rpc.Detail);
                return (rpc.StatusCode, rpc.Detail, rpc.Trailers);
            case OperationCanceledException or IOException when cts.IsCancellationRequested:
                // Client gone or deadline passed: HandleAsync decides which.
                return (StatusCode.Cancelled, "Call cancelled", new Metadata());
            case OperationCanceledException:
                return (StatusCode.Cancelled, "Call cancelled by the handler", new Metadata());
            case ArgumentException arg:
                // Bad user input is a validation error naming the parameter (see STYLE.md).
                return (StatusCode.InvalidArgument, arg.Message, new Metadata());
            default:
                RpcServerLog.HandlerFailed(Logger, Method, ex);
                // Never the stack trace; the message only when the host opted in.
                var detail = Options.EnableDetailedErrors ? $"Exception was thrown by handler. {ex.GetType().Name}: {ex.Message}" : "Exception was thrown by handler.";
                return (StatusCode.Internal, detail, new Metadata());
        }
    }

    /// <summary>
    /// Kestrel's per-request defaults (30 MB body, minimum data rates) would cut long streams; a
    /// gRPC call bounds each message instead (MaxReceiveMessageSize).
    /// </summary>
    private static void DisablePerRequestLimits(HttpContext http)
    {
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size) size.MaxRequestBodySize = null;
        // Kestrel's HTTP/2 streams accept only null for these (and the host sets null server-wide).
        try { if (http.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate) rate.MinDataRate = null; }
        catch (NotSupportedException) { }
        try { if (http.Features.Get<IHttpMinResponseDataRateFeature>() is { } rate) rate.MinDataRate = null; }
        catch (NotSupportedException) { }
    }

    private static Metadata ReadMetadata(IHeaderDictionary headers)
    {
        var metadata = new Metadata();
        foreach (var (key, values) in headers)
        {
            if (GrpcProtocol.IsReservedHeader(key)) continue;
            foreach (var value in values)
                if (value is not null) metadata.AddFromWire(key, value);
        }
        return metadata;
    }
}
