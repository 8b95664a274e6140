using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using Cluster.Rpc.Protocol;
using Google.Protobuf;

namespace Cluster.Rpc.Client;

/// <summary>
/// One call on the wire, shared by the three client shapes: sends the request headers, checks
/// the response headers, reads framed messages and takes the status from the trailers (or from
/// the headers of a trailers-only response). Every failure leaves it as an <see cref="RpcException"/>.
/// </summary>
internal sealed class ClientCall<TRequest, TResponse> : IClientCallControl
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    private static readonly StreamPipeReaderOptions ReaderOptions = new(bufferSize: 64 * 1024, minimumReadSize: 16 * 1024);

    private readonly RpcChannel _channel;
    private readonly Method<TRequest, TResponse> _method;
    private readonly CallOptions _options;
    private readonly CancellationTokenSource? _deadlineCts;
    private readonly CancellationTokenSource _cts;
    private volatile bool _cancelled;
    private HttpResponseMessage? _response;
    private PipeReader? _reader;
    private string? _encoding;
    private bool _finished;

    public ClientCall(RpcChannel channel, Method<TRequest, TResponse> method, CallOptions options)
    {
        _channel = channel;
        _method = method;
        _options = options;
        if (options.Deadline is { } deadline)
        {
            var remaining = deadline.ToUniversalTime() - DateTime.UtcNow;
            _deadlineCts = new CancellationTokenSource();
            if (remaining <= TimeSpan.Zero) _deadlineCts.Cancel();
            else if (remaining < TimeSpan.FromMilliseconds(int.MaxValue)) _deadlineCts.CancelAfter(remaining);
        }
        _cts = _deadlineCts is null
            ? CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken)
            : CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken, _deadlineCts.Token);
        // Cancellation or deadline must reach the server at once (RST_STREAM CANCEL), not when
        // the caller gets round to disposing the call: disposing the response resets the stream.
        _cts.Token.Register(static state => ((ClientCall<TRequest, TResponse>)state!)._response?.Dispose(), this);
    }

    public CancellationToken Token => _cts.Token;

    public Metadata ResponseHeaders { get; private set; } = new();

    public Metadata? Trailers { get; private set; }

    /// <summary>Cancels the call: the stream is reset and pending operations fail CANCELLED.</summary>
    public void Cancel()
    {
        _cancelled = true;
        try { _cts.Cancel(); } catch (ObjectDisposedException) { }
    }

    /// <summary>
    /// Sends the request and waits for the response headers; throws for trailers-only errors.
    /// <paramref name="content"/> is called once per attempt: a stream the server refused
    /// (REFUSED_STREAM, e.g. over its concurrent-stream limit before the client learnt it) was
    /// not processed, so a body that can be rebuilt is sent again (gRPC's transparent retry).
    /// </summary>
    public async Task SendAsync(Func<HttpContent> content, bool canRetry)
    {
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                _cts.Token.ThrowIfCancellationRequested();
                try
                {
                    _response = await _channel.Http.SendAsync(CreateRequest(content()), HttpCompletionOption.ResponseHeadersRead, _cts.Token).ConfigureAwait(false);
                    break;
                }
                catch (HttpRequestException ex) when (canRetry && attempt < MaxAttempts && IsRefusedStream(ex))
                {
                    await Task.Delay(attempt * 5, _cts.Token).ConfigureAwait(false);
                }
            }
            if (_cts.IsCancellationRequested) _response.Dispose(); // cancelled while the headers arrived
            CheckResponseHeaders(_response);
            if (_finished) return;
            // 64 KiB reads instead of the 4 KiB default: messages run to MiBs (KV chunks).
            _reader = PipeReader.Create(await _response.Content.ReadAsStreamAsync(_cts.Token).ConfigureAwait(false), ReaderOptions);
        }
        catch (Exception ex)
        {
            throw ToRpcException(ex);
        }
    }

    private const int MaxAttempts = 5;

    private HttpRequestMessage CreateRequest(HttpContent content)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(_channel.Address, _method.FullName))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact, // h2c with prior knowledge
            Content = content,
        };
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        request.Headers.TryAddWithoutValidation("user-agent", "cluster-rpc/1.0");
        request.Headers.TryAddWithoutValidation(GrpcProtocol.AcceptEncodingHeader, GrpcProtocol.SupportedEncodings);
        if (_options.Deadline is { } deadline)
            request.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcTimeout.Format(deadline.ToUniversalTime() - DateTime.UtcNow));
        if (_options.Headers is { } headers)
            foreach (var e in headers)
                if (!GrpcProtocol.IsReservedHeader(e.Key)) request.Headers.TryAddWithoutValidation(e.Key, Metadata.WireValue(e));
        TraceContext.Inject(request.Headers);
        return request;
    }

    private static bool IsRefusedStream(Exception ex) => FindHttp2Error(ex) == RefusedStream;

    /// <summary>The HTTP/2 error code (RST_STREAM/GOAWAY) behind an exception, if any.</summary>
    private static long? FindHttp2Error(Exception? ex)
    {
        for (; ex is not null; ex = ex.InnerException)
            if (ex is HttpProtocolException http) return http.ErrorCode;
        return null;
    }

    private const long RefusedStream = 0x7;

    /// <summary>The next response message, or null at the end of the stream (after an OK status).</summary>
    public async ValueTask<TResponse?> ReadNextAsync()
    {
        if (_finished) return null;
        try
        {
            var message = await GrpcFraming.ReadMessageAsync(_reader!, _method.ResponseParser, _channel.Options.MaxReceiveMessageSize, _encoding, _cts.Token).ConfigureAwait(false);
            if (message is not null) return message;
            _finished = true;
            var trailers = _response!.TrailingHeaders;
            if (!trailers.Contains(GrpcProtocol.StatusHeader))
                throw new RpcException(StatusCode.Internal, "Response ended without a grpc-status trailer");
            ThrowIfNotOk(trailers);
            return null;
        }
        catch (Exception ex)
        {
            throw ToRpcException(ex);
        }
    }

    /// <summary>Reads exactly one response message and the OK status after it.</summary>
    public async Task<TResponse> ReadSingleAsync()
    {
        var message = await ReadNextAsync().ConfigureAwait(false)
            ?? throw new RpcException(StatusCode.Internal, "Call completed OK without a response message");
        if (await ReadNextAsync().ConfigureAwait(false) is not null)
            throw new RpcException(StatusCode.Internal, "More than one response message for a single-response method");
        return message;
    }

    /// <summary>
    /// Spec: a non-200 HTTP status maps to a gRPC code (doc/http-grpc-status-mapping.md); a
    /// grpc-status in the headers marks a trailers-only response.
    /// </summary>
    private void CheckResponseHeaders(HttpResponseMessage response)
    {
        ResponseHeaders = ReadMetadata(response.Headers);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            var code = (int)response.StatusCode switch
            {
                400 => StatusCode.Internal,
                401 => StatusCode.Unauthenticated,
                403 => StatusCode.PermissionDenied,
                404 => StatusCode.Unimplemented,
                429 or 502 or 503 or 504 => StatusCode.Unavailable,
                _ => StatusCode.Unknown,
            };
            throw new RpcException(code, $"Bad gRPC response. HTTP status code: {(int)response.StatusCode}");
        }
        if (response.Headers.Contains(GrpcProtocol.StatusHeader))
        {
            _finished = true;
            Trailers = ResponseHeaders;
            ThrowIfNotOk(response.Headers);
            return;
        }
        var contentType = response.Content.Headers.ContentType?.ToString();
        if (!GrpcProtocol.IsGrpcContentType(contentType))
            throw new RpcException(StatusCode.Internal, $"Bad gRPC response. Content-Type '{contentType}'");
        _encoding = response.Headers.TryGetValues(GrpcProtocol.EncodingHeader, out var enc) ? enc.FirstOrDefault() : null;
        if (_encoding is not null && _encoding != GrpcProtocol.Identity && _encoding != GrpcProtocol.Gzip)
            throw new RpcException(StatusCode.Internal, $"Unsupported response grpc-encoding '{_encoding}'");
    }

    private void ThrowIfNotOk(HttpHeaders headers)
    {
        Trailers = ReadMetadata(headers);
        var statusText = headers.GetValues(GrpcProtocol.StatusHeader).First();
        if (!int.TryParse(statusText, NumberStyles.None, CultureInfo.InvariantCulture, out var status))
            throw new RpcException(StatusCode.Unknown, $"Unparsable grpc-status '{statusText}'");
        if (status == 0) return;
        var message = headers.TryGetValues(GrpcProtocol.MessageHeader, out var m) ? PercentEncoding.Decode(m.First()) : "";
        throw new RpcException((StatusCode)status, message, Trailers);
    }

    /// <summary>All exception-to-status mapping of the client, in one place.</summary>
    private RpcException ToRpcException(Exception ex)
    {
        // Our own cancellation surfaces as OCE or as an IO error from the reset stream.
        if (_deadlineCts?.IsCancellationRequested == true && ex is not RpcException { StatusCode: not StatusCode.Cancelled })
            return new RpcException(StatusCode.DeadlineExceeded, "Deadline Exceeded", inner: ex);
        if ((_cancelled || _options.CancellationToken.IsCancellationRequested) && ex is not RpcException)
            return new RpcException(StatusCode.Cancelled, "Call cancelled", inner: ex);
        return ex switch
        {
            RpcException rpc => rpc,
            InvalidProtocolBufferException => new RpcException(StatusCode.Internal, "Failed to deserialize response message", inner: ex),
            _ when FindHttp2Error(ex) is { } code => new RpcException(FromHttp2ErrorCode(code), $"HTTP/2 error {code}: {ex.Message}", inner: ex),
            // Connection refused or lost, DNS, TLS, IO: the transport is unavailable (spec).
            HttpRequestException or IOException or System.Net.Sockets.SocketException => new RpcException(StatusCode.Unavailable, ex.Message, inner: ex),
            OperationCanceledException => new RpcException(StatusCode.Cancelled, "Call cancelled", inner: ex),
            _ => new RpcException(StatusCode.Unknown, $"{ex.GetType().Name}: {ex.Message}", inner: ex),
        };
    }

    /// <summary>RST_STREAM / GOAWAY error codes to status, from the spec's "Errors" table.</summary>
    private static StatusCode FromHttp2ErrorCode(long code) => code switch
    {
        0x7 => StatusCode.Unavailable, // REFUSED_STREAM: the call was not processed, may be retried
        0x8 => StatusCode.Cancelled, // CANCEL
        0xb => StatusCode.ResourceExhausted, // ENHANCE_YOUR_CALM
        0xc => StatusCode.PermissionDenied, // INADEQUATE_SECURITY
        _ => StatusCode.Internal, // NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR ...
    };

    private static Metadata ReadMetadata(HttpHeaders headers)
    {
        var metadata = new Metadata();
        foreach (var (key, values) in headers)
        {
            if (GrpcProtocol.IsReservedHeader(key)) continue;
            foreach (var value in values) metadata.AddFromWire(key, value);
        }
        return metadata;
    }

    public void Dispose()
    {
        if (!_finished) Cancel();
        _response?.Dispose();
        _cts.Dispose();
        _deadlineCts?.Dispose();
    }
}
