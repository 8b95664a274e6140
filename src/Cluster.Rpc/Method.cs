using Google.Protobuf;

namespace Cluster.Rpc;

/// <summary>The call shapes this layer supports.</summary>
public enum MethodType
{
    Unary,
    ServerStreaming,
    ClientStreaming,
}

/// <summary>
/// A typed method descriptor: its shape, its full path ("/package.Service/Method", the HTTP/2
/// ":path" of the gRPC spec) and the protobuf parsers of its request and response messages.
/// </summary>
public sealed class Method<TRequest, TResponse>
    where TRequest : class, IMessage<TRequest>
    where TResponse : class, IMessage<TResponse>
{
    public Method(MethodType type, string serviceName, string name, MessageParser<TRequest> requestParser, MessageParser<TResponse> responseParser)
    {
        Type = type;
        ServiceName = serviceName;
        Name = name;
        FullName = $"/{serviceName}/{name}";
        RequestParser = requestParser;
        ResponseParser = responseParser;
    }

    public MethodType Type { get; }

    /// <summary>Fully qualified service name, e.g. "llmcluster.v1.Gateway".</summary>
    public string ServiceName { get; }

    public string Name { get; }

    /// <summary>"/{ServiceName}/{Name}".</summary>
    public string FullName { get; }

    public MessageParser<TRequest> RequestParser { get; }

    public MessageParser<TResponse> ResponseParser { get; }

    public override string ToString() => FullName;
}
