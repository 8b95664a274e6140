using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using Cluster.Rpc.Protocol;
using Google.Protobuf;

namespace Cluster.Rpc.Client;

/// <summary>Request bodies: one framed message, or a stream the caller writes into.</summary>
internal static class RequestContent
{
    private static readonly MediaTypeHeaderValue GrpcContentType = new(GrpcProtocol.ContentType);

    /// <summary>The body of a unary or server-streaming call: exactly one framed message.</summary>
    public static HttpContent Single(IMessage message)
    {
        var buffer = new ArrayBufferWriter<byte>(message.CalculateSize() + GrpcFraming.HeaderSize);
        GrpcFraming.WriteMessage(buffer, message);
        var content = new ReadOnlyMemoryContent(buffer.WrittenMemory);
        content.Headers.ContentType = GrpcContentType;
        return content;
    }

    /// <summary>
    /// The body of a client-streaming call. HttpClient calls <see cref="SerializeToStreamAsync(Stream, TransportContext?)"/>
    /// once the request is sent; the request stream is handed to the writer and the body ends
    /// (END_STREAM) when the writer completes it.
    /// </summary>
    public sealed class Streaming : HttpContent
    {
        private readonly TaskCompletionSource<Stream> _stream = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Streaming() => Headers.ContentType = GrpcContentType;

        public Task<Stream> Stream => _stream.Task;

        /// <summary>Ends the request body normally.</summary>
        public void Complete() => _done.TrySetResult();

        /// <summary>Ends the request body without END_STREAM (the call is being torn down).</summary>
        public void Abort() => _done.TrySetCanceled();

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            _stream.TrySetResult(stream);
            await _done.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}
