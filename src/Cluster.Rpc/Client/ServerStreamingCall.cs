using System.Runtime.CompilerServices;

namespace Cluster.Rpc.Client;

/// <summary>A running server-streaming call. Disposing it before the end cancels the call.</summary>
public sealed class ServerStreamingCall<TResponse> : IDisposable
    where TResponse : class
{
    private readonly Task _started;
    private readonly Func<ValueTask<TResponse?>> _readNext;
    private readonly IClientCallControl _call;

    internal ServerStreamingCall(Task started, Func<ValueTask<TResponse?>> readNext, IClientCallControl call)
    {
        _started = started;
        _readNext = readNext;
        _call = call;
    }

    /// <summary>The response messages in order; ends after an OK status, throws <see cref="RpcException"/> otherwise.</summary>
    public async IAsyncEnumerable<TResponse> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var registration = cancellationToken.Register(_call.Cancel);
        await _started.ConfigureAwait(false);
        while (await _readNext().ConfigureAwait(false) is { } message) yield return message;
    }

    /// <summary>Response headers (custom metadata), once they arrived.</summary>
    public async Task<Metadata> GetResponseHeadersAsync()
    {
        await _started.ConfigureAwait(false);
        return _call.ResponseHeaders;
    }

    /// <summary>Trailers of a finished call (empty before the end).</summary>
    public Metadata GetTrailers() => _call.Trailers ?? new Metadata();

    public void Cancel() => _call.Cancel();

    public void Dispose() => _call.Dispose();
}

/// <summary>The parts of a call its public wrappers expose.</summary>
internal interface IClientCallControl : IDisposable
{
    Metadata ResponseHeaders { get; }
    Metadata? Trailers { get; }
    void Cancel();
}
