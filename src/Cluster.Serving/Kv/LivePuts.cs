using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// Whole puts that readers were told to wait for (<see cref="PendingPuts"/>) while their blocks stream
/// in. A reader of the session follows the blocks as they land instead of waiting for the put's end, so
/// the get's transfer overlaps the put's (prefill streams layer by layer during its pass; the decode
/// worker's get used to start only once the last layer had landed and been stored). One live put per
/// session: a second whole put of the same session at once is stored as before but not followed.
/// </summary>
public sealed class LivePuts
{
    private readonly Dictionary<string, LivePut> _bySession = [];
    private readonly Lock _lock = new();
    private TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when the next put (of any session) starts: a reader that found only an
    /// announcement (the put's first message not yet in) looks again then.</summary>
    public Task NextStart { get { lock (_lock) return _started.Task; } }

    /// <summary>Sessions with a put streaming in now.</summary>
    public int Count { get { lock (_lock) return _bySession.Count; } }

    /// <summary>A put of <paramref name="sessionId"/> starts streaming; readers may follow it until it ends.</summary>
    public LivePut Start(string sessionId, KvLayout layout, KvPolicy? policy, int tokenCount)
    {
        var put = new LivePut(this, sessionId, layout, policy, tokenCount);
        TaskCompletionSource started;
        lock (_lock)
        {
            _bySession.TryAdd(sessionId, put);
            (started, _started) = (_started, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        }
        started.TrySetResult();
        return put;
    }

    /// <summary>The put of the session streaming in now, if one is.</summary>
    public LivePut? Find(string sessionId)
    {
        lock (_lock) return _bySession.GetValueOrDefault(sessionId);
    }

    internal void Ended(LivePut put)
    {
        lock (_lock)
            if (_bySession.TryGetValue(put.SessionId, out var live) && live == put) _bySession.Remove(put.SessionId);
    }
}

/// <summary>
/// One whole put as it streams in: its blocks so far, then how it ended (the version stored, or the
/// error). The store keeps the blocks as they came (prefill compressed them before sending); if it
/// changed them on ingest, what followers already read is not what is stored, and they fail.
/// </summary>
public sealed class LivePut
{
    private readonly LivePuts _owner;
    private readonly List<WireKvBlock> _blocks = [];
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private StoredKv? _stored;
    private RpcException? _failed;
    private readonly Lock _lock = new();

    internal LivePut(LivePuts owner, string sessionId, KvLayout layout, KvPolicy? policy, int tokenCount)
    {
        (_owner, SessionId, Layout, Policy, TokenCount) = (owner, sessionId, layout, policy, tokenCount);
    }

    public string SessionId { get; }
    public KvLayout Layout { get; }
    public KvPolicy? Policy { get; }
    public int TokenCount { get; }

    /// <summary>A block has landed whole.</summary>
    public void Add(WireKvBlock block)
    {
        lock (_lock)
        {
            if (_stored is not null || _failed is not null) throw new InvalidOperationException("the put has ended");
            _blocks.Add(block);
            Signal();
        }
    }

    /// <summary>The put is stored as <paramref name="kv"/>; followers get its handle. If the store kept
    /// other blocks than those that came (compressed on ingest), followers fail instead.</summary>
    public void Complete(StoredKv kv)
    {
        bool same;
        lock (_lock) same = kv.Layers.Length == _blocks.Count && kv.Layers.Select((b, i) => ReferenceEquals(b, _blocks[i])).All(x => x);
        if (!same)
        {
            Fail($"the cache manager compressed the put of session '{SessionId}' on ingest after its blocks were served; read it again");
            return;
        }
        End(() => _stored = kv);
    }

    /// <summary>The put ended without storing (or was changed on ingest): followers end with NOT_FOUND,
    /// as a get after a failed put would, and read again or rebuild.</summary>
    public void Fail(string why) => End(() => _failed ??= new RpcException(new Status(StatusCode.NotFound, $"no KV for session '{SessionId}': {why}")));

    private void End(Action set)
    {
        lock (_lock)
        {
            if (_stored is not null || _failed is not null) return;
            set();
            Signal();
        }
        _owner.Ended(this);
    }

    /// <summary>Block <paramref name="index"/> once it has landed, or the stored version when the put
    /// ended with fewer blocks. Throws the put's failure.</summary>
    public async Task<(WireKvBlock? Block, StoredKv? Stored)> NextAsync(int index, CancellationToken ct)
    {
        while (true)
        {
            Task changed;
            lock (_lock)
            {
                if (index < _blocks.Count && _failed is null) return (_blocks[index], null);
                if (_failed is not null) throw _failed;
                if (_stored is not null) return (null, _stored);
                changed = _changed.Task;
            }
            await changed.WaitAsync(ct);
        }
    }

    private void Signal()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }
}
