using Google.Protobuf;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Cluster.Rpc.Server;

/// <summary>Unary: read one request, await the handler, write one response.</summary>
internal sealed class UnaryServerCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse> handler, RpcServerOptions options, ILogger logger)
    : ServerCallHandler(method.FullName, options, logger)
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    protected override async Task HandleCallAsync(HttpContext http, ServerCallContext context, string? encoding)
    {
        var request = await ReadSingleRequestAsync(http, method.RequestParser, encoding, context.CancellationToken);
        var response = await handler(request, context);
        await ServerResponse.WriteMessageAsync(http.Response, context.ResponseHeaders, response, context.CancellationToken);
    }
}

/// <summary>Server streaming: read one request; the handler writes any number of responses.</summary>
internal sealed class ServerStreamingServerCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse> handler, RpcServerOptions options, ILogger logger)
    : ServerCallHandler(method.FullName, options, logger)
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    protected override async Task HandleCallAsync(HttpContext http, ServerCallContext context, string? encoding)
    {
        var request = await ReadSingleRequestAsync(http, method.RequestParser, encoding, context.CancellationToken);
        await handler(request, new Writer(http, context), context);
    }

    private sealed class Writer(HttpContext http, ServerCallContext context) : IServerStreamWriter<TResponse>
    {
        public Task WriteAsync(TResponse message, CancellationToken cancellationToken = default)
        {
            // Writes always observe the call's token (client gone, deadline) as well as the caller's.
            if (!cancellationToken.CanBeCanceled || cancellationToken == context.CancellationToken)
                return ServerResponse.WriteMessageAsync(http.Response, context.ResponseHeaders, message, context.CancellationToken);
            return WriteLinkedAsync(message, cancellationToken);
        }

        private async Task WriteLinkedAsync(TResponse message, CancellationToken cancellationToken)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, context.CancellationToken);
            await ServerResponse.WriteMessageAsync(http.Response, context.ResponseHeaders, message, linked.Token);
        }
    }
}

/// <summary>Client streaming: the handler enumerates the requests and returns one response.</summary>
internal sealed class ClientStreamingServerCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, ClientStreamingServerMethod<TRequest, TResponse> handler, RpcServerOptions options, ILogger logger)
    : ServerCallHandler(method.FullName, options, logger)
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    protected override async Task HandleCallAsync(HttpContext http, ServerCallContext context, string? encoding)
    {
        var requests = ReadRequestsAsync(http, method.RequestParser, encoding, context.CancellationToken);
        var response = await handler(requests, context);
        await ServerResponse.WriteMessageAsync(http.Response, context.ResponseHeaders, response, context.CancellationToken);
    }
}
