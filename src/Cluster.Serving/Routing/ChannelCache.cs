using System.Collections.Concurrent;
using Cluster.Rpc;
using Cluster.Rpc.Client;

namespace Cluster.Serving.Routing;

/// <summary>One long-lived channel per peer address (channels pool HTTP/2 connections; making one per
/// call would open a connection per call).</summary>
public sealed class ChannelCache : IDisposable
{
    private readonly ConcurrentDictionary<string, RpcChannel> _channels = new();

    public RpcChannel Get(string address) => _channels.GetOrAdd(Normalize(address), a => new RpcChannel(new Uri(a)));

    private static string Normalize(string address)
    {
        var a = address.Contains("://") ? address : "http://" + address;
        return Uri.TryCreate(a, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"
            ? u.GetLeftPart(UriPartial.Authority)
            : throw new RpcException(StatusCode.InvalidArgument, $"'{address}' is not a host:port or http:// address");
    }

    public void Dispose()
    {
        foreach (var c in _channels.Values) c.Dispose();
    }
}
