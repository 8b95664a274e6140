using System.Buffers;
using Cluster.Rpc.Protocol;
using Google.Protobuf;

namespace Cluster.Rpc.Client;

/// <summary>
/// A running client-streaming call. Write requests one at a time (not concurrently), call
/// <see cref="CompleteAsync"/>, then await <see cref="ResponseAsync"/>. Disposing it before the
/// response cancels the call.
/// </summary>
public sealed class ClientStreamingCall<TRequest, TResponse> : IDisposable
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    private readonly ClientCall<TRequest, TResponse> _call;
    private readonly RequestContent.Streaming _content = new();
    private readonly ArrayBufferWriter<byte> _buffer = new();

    internal ClientStreamingCall(ClientCall<TRequest, TResponse> call)
    {
        _call = call;
        ResponseAsync = RunAsync();
    }

    /// <summary>The single response; throws <see cref="RpcException"/> for a non-OK status.</summary>
    public Task<TResponse> ResponseAsync { get; }

    public Metadata GetTrailers() => _call.Trailers ?? new Metadata();

    /// <summary>Sends one request message (framed and flushed).</summary>
    public async Task WriteAsync(TRequest message)
    {
        // If the call ended first (e.g. the server answered with an error), report that status.
        var ready = await Task.WhenAny(_content.Stream, ResponseAsync).ConfigureAwait(false);
        if (ready != _content.Stream)
        {
            await ResponseAsync.ConfigureAwait(false);
            throw new RpcException(StatusCode.Internal, "Cannot write: the call already completed");
        }
        var stream = await _content.Stream.ConfigureAwait(false);
        _buffer.ResetWrittenCount();
        GrpcFraming.WriteMessage(_buffer, message);
        try
        {
            await stream.WriteAsync(_buffer.WrittenMemory, _call.Token).ConfigureAwait(false);
            await stream.FlushAsync(_call.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A broken request stream means the call is ending; its status says why. The wait is
            // bounded in case the response side has not noticed yet.
            if (await Task.WhenAny(ResponseAsync, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false) == ResponseAsync)
            {
                await ResponseAsync.ConfigureAwait(false);
                throw new RpcException(StatusCode.Internal, "Cannot write: the call already completed", inner: ex);
            }
            throw new RpcException(StatusCode.Unavailable, $"Request stream failed: {ex.Message}", inner: ex);
        }
    }

    /// <summary>Ends the request stream (END_STREAM).</summary>
    public Task CompleteAsync()
    {
        _content.Complete();
        return Task.CompletedTask;
    }

    public void Cancel() => _call.Cancel();

    private async Task<TResponse> RunAsync()
    {
        try
        {
            // No retry: the body is written by the caller as it goes and cannot be replayed.
            await _call.SendAsync(() => _content, canRetry: false).ConfigureAwait(false);
            return await _call.ReadSingleAsync().ConfigureAwait(false);
        }
        finally
        {
            // The response is final: stop the body if the writer has not ended it.
            _content.Abort();
        }
    }

    public void Dispose()
    {
        _content.Abort();
        _call.Dispose();
    }
}
