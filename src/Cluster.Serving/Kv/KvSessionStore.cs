using Cluster.Serving.Hosting;
using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Serving.Kv;

/// <summary>The shape of a model's KV, as a put's layout describes it, and its RoPE table (sink_window re-rotates keys).</summary>
public sealed record KvShape(int Layers, int KvHeads, int HeadDim, RopeTable Rope);

/// <summary>One session's KV as the cache manager holds it.</summary>
public sealed record StoredKv(
    string SessionId, KvShape Shape, KvLayerBlock[] Layers, int TokensSeen, string Policy, long Version,
    bool Checkpoint, int OutputIndex, int TokensReceived)
{
    public long Bytes => Layers.Sum(l => l.DataBytes);
    public int KeptTokens => Layers.Length == 0 ? 0 : Layers[0].Positions.Max(p => p.Length);
}

/// <summary>Why a put was refused.</summary>
public sealed class KvStoreFullException(string message) : Exception(message);

/// <summary>
/// The cache manager's store: the KV of each session, compressed by the session's policy when it
/// arrives over budget, within a memory budget. The first version of a session (the prompt's KV) and
/// its last <see cref="VersionsKept"/> are kept, so that a restart can pick the newest one not ahead
/// of what its client received; the first is always there to fall back on (a restart then recomputes
/// the output token by token, evicting exactly as the original run did). Rule when full: sessions idle for longer than the
/// TTL are dropped first (oldest first); if that is not enough the put is refused
/// (<see cref="KvStoreFullException"/>), so a live session is never evicted or corrupted. A put
/// replaces the session's KV as a whole and raises its version. Thread-safe.
/// </summary>
public sealed class KvSessionStore : IDisposable
{
    private readonly object _lock = new();
    /// <summary>Versions of a session kept (newest last); older ones are dropped as new ones arrive.</summary>
    public const int VersionsKept = 3;

    private readonly Dictionary<string, (List<StoredKv> Versions, DateTime LastUsed)> _sessions = [];
    private readonly PolicyOptions _policyOptions;
    private readonly TimeProvider _time;
    private readonly CpuBackend _backend = new(threads: 1);
    private long _bytes;

    public KvSessionStore(long budgetBytes, TimeSpan ttl, PolicyOptions? policyOptions = null, TimeProvider? time = null)
    {
        BudgetBytes = budgetBytes;
        Ttl = ttl;
        _policyOptions = policyOptions ?? new PolicyOptions();
        _time = time ?? TimeProvider.System;
    }

    public long BudgetBytes { get; }
    public TimeSpan Ttl { get; }
    public long Bytes { get { lock (_lock) return _bytes; } }
    public int Sessions { get { lock (_lock) return _sessions.Count; } }
    public int Blocks { get { lock (_lock) return _sessions.Values.Sum(s => s.Versions.Sum(v => v.Layers.Length)); } }

    /// <summary>Applies <paramref name="policy"/> to the blocks and stores them for the session.</summary>
    /// <exception cref="InvalidRequestException">The blocks do not form one whole cache of the model, or the policy is unknown.</exception>
    /// <exception cref="KvStoreFullException">The budget cannot hold them even after dropping expired sessions.</exception>
    public (StoredKv Kv, TimeSpan CompressionTime) Put(string sessionId, KvShape shape, string policy, int tokensSeen, IReadOnlyList<KvLayerBlock> blocks, bool checkpoint, int outputIndex)
    {
        if (string.IsNullOrEmpty(sessionId)) throw new InvalidRequestException("session_id is empty");
        if (shape.Rope.HeadDim != shape.HeadDim) throw new InvalidRequestException($"the layout's RoPE table covers head_dim {shape.Rope.HeadDim}, not {shape.HeadDim}");
        var parsed = Mapping.PolicyMapping.Parse(string.IsNullOrEmpty(policy) ? "dense" : policy, _policyOptions with { AllowExtrapolation = true });
        if (parsed is QFiltersPolicy { Filters: var f } && (f.Layers, f.KvHeads, f.HeadDim) != (shape.Layers, shape.KvHeads, shape.HeadDim))
            throw new InvalidRequestException($"the Q-Filters are [{f.Layers}, {f.KvHeads}, {f.HeadDim}] but this KV is [{shape.Layers}, {shape.KvHeads}, {shape.HeadDim}]: calibrate for this model");
        var layers = Validate(shape, blocks);
        int received = layers[0].Positions.Max(p => p.Length);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        if (parsed.Budget is int budget && layers.Any(l => l.Positions.Any(p => p.Length > budget)))
            layers = Compress(shape, parsed, tokensSeen, layers);
        var elapsed = sw.Elapsed;

        lock (_lock)
        {
            var versions = _sessions.TryGetValue(sessionId, out var old) ? old.Versions : [];
            var kv = new StoredKv(sessionId, shape, layers, tokensSeen, parsed.Name, versions.Count > 0 ? versions[^1].Version + 1 : 1, checkpoint, outputIndex, received);
            // Drop the oldest checkpoint beyond the limit, never the first version (index 0).
            bool drop = versions.Count > VersionsKept;
            long freed = drop ? versions[1].Bytes : 0;
            MakeRoom(kv.Bytes - freed, sessionId);
            if (drop) versions.RemoveAt(1);
            versions.Add(kv);
            _bytes += kv.Bytes - freed;
            _sessions[sessionId] = (versions, _time.GetUtcNow().UtcDateTime);
            return (kv, elapsed);
        }
    }

    /// <summary>
    /// A version of the session's KV, or null: <paramref name="version"/> exactly, or with 0 the newest
    /// holding at most <paramref name="maxTokens"/> tokens (0: any). Reading counts as use for the TTL.
    /// </summary>
    public StoredKv? Get(string sessionId, long version = 0, int maxTokens = 0)
    {
        lock (_lock)
        {
            if (!_sessions.TryGetValue(sessionId, out var e)) return null;
            _sessions[sessionId] = (e.Versions, _time.GetUtcNow().UtcDateTime);
            return version != 0
                ? e.Versions.FirstOrDefault(v => v.Version == version)
                : e.Versions.LastOrDefault(v => maxTokens <= 0 || v.TokensSeen <= maxTokens);
        }
    }

    public bool Release(string sessionId)
    {
        lock (_lock)
        {
            if (!_sessions.Remove(sessionId, out var e)) return false;
            _bytes -= e.Versions.Sum(v => v.Bytes);
            return true;
        }
    }

    private void MakeRoom(long extra, string keep)
    {
        if (_bytes + extra <= BudgetBytes) return;
        var now = _time.GetUtcNow().UtcDateTime;
        foreach (var (id, e) in _sessions.Where(s => s.Key != keep && now - s.Value.LastUsed > Ttl).OrderBy(s => s.Value.LastUsed).ToList())
        {
            _sessions.Remove(id);
            _bytes -= e.Versions.Sum(v => v.Bytes);
            if (_bytes + extra <= BudgetBytes) return;
        }
        throw new KvStoreFullException($"KV store full: {_bytes + extra} bytes needed, budget {BudgetBytes} (no session idle past the {Ttl.TotalSeconds:F0} s TTL to drop)");
    }

    private static KvLayerBlock[] Validate(KvShape shape, IReadOnlyList<KvLayerBlock> blocks)
    {
        if (blocks.Count != shape.Layers) throw new InvalidRequestException($"expected {shape.Layers} layer blocks, got {blocks.Count}");
        var layers = new KvLayerBlock[shape.Layers];
        foreach (var b in blocks)
        {
            if ((uint)b.Layer >= layers.Length || layers[b.Layer] is not null) throw new InvalidRequestException($"layer {b.Layer} is out of range or sent twice");
            if (b.Positions.Length != shape.KvHeads) throw new InvalidRequestException($"layer {b.Layer} has {b.Positions.Length} KV heads, the layout {shape.KvHeads}");
            if (b.Positions.Select(p => p.Length).Distinct().Count() > 1) throw new InvalidRequestException($"layer {b.Layer}: heads hold different token counts");
            layers[b.Layer] = b;
        }
        return layers;
    }

    /// <summary>Runs the policy's bulk compression on a host cache built from the blocks.</summary>
    private KvLayerBlock[] Compress(KvShape shape, KvCompressionPolicy policy, int tokensSeen, KvLayerBlock[] layers)
    {
        int most = layers.Max(l => l.Positions.Max(p => p.Length));
        using var cache = new SequenceKvCache(_backend, shape.Layers, shape.KvHeads, shape.HeadDim, most);
        lock (_backend)
        {
            foreach (var b in layers) KvCacheSnapshot.Restore(_backend, cache, b);
            KvCacheSnapshot.SetTokensSeen(cache, tokensSeen);
            policy.Compress(_backend, shape.Rope, cache);
            return Enumerable.Range(0, shape.Layers).Select(l => KvCacheSnapshot.Capture(_backend, cache, l)).ToArray();
        }
    }

    public void Dispose() => _backend.Dispose();
}
