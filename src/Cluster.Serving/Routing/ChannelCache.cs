using System.Collections.Concurrent;
using Grpc.Core;
using Grpc.Net.Client;

namespace Cluster.Serving.Routing;

/// <summary>One long-lived channel per peer address (channels pool HTTP/2 connections; making one per
/// call would open a connection per call).</summary>
public sealed class ChannelCache : IDisposable
{
    private readonly ConcurrentDictionary<Uri, GrpcChannel> _channels = new();

    /// <summary>The channel for an address a request named; INVALID_ARGUMENT when it is not one.</summary>
    public GrpcChannel Get(string address)
    {
        Uri uri;
        try
        {
            uri = GrpcChannels.ParseAddress(address);
        }
        catch (ArgumentException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        return _channels.GetOrAdd(uri, u => GrpcChannels.Create(u));
    }

    public void Dispose()
    {
        foreach (var c in _channels.Values) c.Dispose();
    }
}
