using Cluster.Serving.Hosting;
using Cluster.Engine.Compression;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Serving.Kv;

/// <summary>The shape of a model's KV, as a put's layout describes it, its RoPE table (sink_window
/// re-rotates keys) and the element type its blocks were written in (stored as it came).</summary>
public sealed record KvShape(int Layers, int KvHeads, int HeadDim, RopeTable Rope, KvPrecision Precision = KvPrecision.Fp32);

/// <summary>One session's KV as the cache manager holds it: the blocks in their wire form.</summary>
public sealed record StoredKv(
    string SessionId, KvShape Shape, WireKvBlock[] Layers, int TokensSeen, string Policy, long Version,
    bool Checkpoint, int OutputIndex, int TokensReceived)
{
    /// <summary>
    /// Set on a checkpoint the store keeps as its changes (issue 17): the whole version they apply to (the
    /// session's first). <see cref="Layers"/> then hold only the tokens sent since that version, and
    /// <see cref="Removed"/> its tokens gone, per layer and head; <see cref="Whole"/> is the cache itself.
    /// The store hands out whole versions only.
    /// </summary>
    public StoredKv? Over { get; init; }
    public int[][][]? Removed { get; init; }
    private readonly int _keptTokens = -1;

    public long Bytes => Layers.Sum(l => l.DataBytes);

    /// <summary>Tokens kept by the head of the first layer that keeps the most.</summary>
    public int KeptTokens
    {
        get => _keptTokens >= 0 ? _keptTokens : Layers.Length == 0 ? 0 : Layers[0].MostTokens;
        init => _keptTokens = value;
    }

    /// <summary>The changes as a delta on <see cref="Over"/>.</summary>
    public (WireKvBlock Sent, int[][] Removed)[] Changes => [.. Layers.Select(l => (l, Removed![l.Layer]))];

    /// <summary>This version as a whole cache (for one kept as changes, made now: a copy of the cache).</summary>
    public StoredKv Whole() => Over is null ? this
        : this with { Layers = KvDelta.Apply(Over.Layers, Changes, Shape.HeadDim), Over = null, Removed = null, KeptTokens = -1 };
}

/// <summary>Why a put was refused.</summary>
public sealed class KvStoreFullException(string message) : Exception(message);

/// <summary>A delta put whose base version the store does not hold (released, superseded, evicted,
/// or a different sequence under the same version number): nothing was stored.</summary>
public sealed class KvBaseMissingException(string message) : Exception(message);

/// <summary>Why a session left memory (or the spill), for llm_kv_session_evictions_total's <c>reason</c>.</summary>
public enum KvEvictionReason
{
    /// <summary>Idle past the TTL, evicted for room (to the spill when there is one).</summary>
    Ttl,
    /// <summary>Least recently used among sessions idle at least the minimum, evicted for room.</summary>
    Lru,
    /// <summary>A spilled session deleted to keep the spill within its budget.</summary>
    SpillFull,
}

/// <summary>
/// The cache manager's store: the KV of each session, compressed by the session's policy when it
/// arrives over budget, within a memory budget. The first version of a session (the prompt's KV) and
/// its last <see cref="VersionsKept"/> are kept, so that a restart can pick the newest one not ahead
/// of what its client received; the first is always there to fall back on (a restart then recomputes
/// the output token by token, evicting exactly as the original run did).
/// <para>
/// It is a cache, not the source of truth (issue 21): decode workers rebuild a missing session's KV
/// from its prompt, so evicting costs latency, not correctness. Rule when a put does not fit: whole
/// sessions other than the one being put are evicted, those idle past the TTL first, then least
/// recently used first (a get or put is a use), but only sessions idle for at least
/// <see cref="MinIdle"/>, so that a live stream's KV is not evicted between its checkpoints. If
/// evicting every candidate would not be enough, nothing is evicted and the put is refused
/// (<see cref="KvStoreFullException"/>). Sessions idle past the TTL are also swept out (every
/// <see cref="SweepInterval"/>, inside the next get or put) whether or not room is needed: without it,
/// a store under steady load grows to its whole budget however short the TTL, and a soak's memory is
/// never flat (bench/RESULTS.md, soak). With a <see cref="KvSpill"/>, evicted sessions are written
/// there first, a get or put of a spilled session brings it back, and <see cref="Dispose"/> spills
/// everything still in memory so a restart on the same directory loses nothing.
/// </para>
/// A put replaces the session's KV as a whole and raises its version. Thread-safe (one lock; spill
/// I/O happens under it, which is simple and correct, and only slow when the store is already full).
/// </summary>
public sealed class KvSessionStore : IDisposable
{
    private readonly object _lock = new();
    /// <summary>Versions of a session kept (newest last); older ones are dropped as new ones arrive.</summary>
    public const int VersionsKept = 3;

    /// <summary>Default <see cref="MinIdle"/>: longer than a decode worker takes between checkpoints.</summary>
    public static readonly TimeSpan DefaultMinIdle = TimeSpan.FromSeconds(5);

    private readonly Dictionary<string, (List<StoredKv> Versions, DateTime LastUsed)> _sessions = [];
    private readonly PolicyOptions _policyOptions;
    private readonly TimeProvider _time;
    private readonly KvSpill? _spill;
    private readonly long[] _evictions = new long[Enum.GetValues<KvEvictionReason>().Length];
    private readonly CpuBackend _backend = new(threads: 1);
    private long _bytes;
    private bool _disposed;
    private DateTime _nextSweep;

    /// <summary>How often sessions idle past the TTL are swept (at most; inside the next get or put).</summary>
    public static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(5);

    public KvSessionStore(long budgetBytes, TimeSpan ttl, PolicyOptions? policyOptions = null, TimeProvider? time = null,
        TimeSpan? minIdle = null, KvSpill? spill = null)
    {
        BudgetBytes = budgetBytes;
        Ttl = ttl;
        MinIdle = minIdle ?? DefaultMinIdle;
        _policyOptions = policyOptions ?? new PolicyOptions();
        _time = time ?? TimeProvider.System;
        _spill = spill;
        if (spill is not null) _evictions[(int)KvEvictionReason.SpillFull] = spill.StartupDeleted;
        _nextSweep = Now + SweepInterval;
    }

    public long BudgetBytes { get; }
    public TimeSpan Ttl { get; }
    /// <summary>How long a session must have been idle before it may be evicted for room.</summary>
    public TimeSpan MinIdle { get; }
    public long Bytes { get { lock (_lock) return _bytes; } }
    public int Sessions { get { lock (_lock) return _sessions.Count; } }
    public int Blocks { get { lock (_lock) return _sessions.Values.Sum(s => s.Versions.Sum(v => v.Layers.Length)); } }
    public long SpilledBytes { get { lock (_lock) return _spill?.Bytes ?? 0; } }
    public int SpilledSessions { get { lock (_lock) return _spill?.Sessions ?? 0; } }

    /// <summary>Sessions evicted so far for <paramref name="reason"/>.</summary>
    public long Evictions(KvEvictionReason reason) { lock (_lock) return _evictions[(int)reason]; }

    /// <summary>Applies <paramref name="policy"/> to the blocks and stores them for the session, in
    /// <paramref name="shape"/>'s precision (the blocks' own; compression re-rounds only what it re-rotates).</summary>
    /// <exception cref="InvalidRequestException">The blocks do not form one whole cache of the model, or the policy is unknown.</exception>
    /// <exception cref="KvStoreFullException">The budget cannot hold them even after evicting every candidate session.</exception>
    public (StoredKv Kv, TimeSpan CompressionTime) Put(string sessionId, KvShape shape, string policy, int tokensSeen, IReadOnlyList<WireKvBlock> blocks, bool checkpoint, int outputIndex)
        => Put(sessionId, shape, policy, tokensSeen, blocks, checkpoint, outputIndex, requiredBase: null);

    /// <param name="requiredBase">For a delta: the version it was applied to, which must still be stored when the
    /// result is (a release or eviction between the two refuses the delta instead of storing it as a new session).</param>
    private (StoredKv Kv, TimeSpan CompressionTime) Put(string sessionId, KvShape shape, string policy, int tokensSeen, IReadOnlyList<WireKvBlock> blocks, bool checkpoint, int outputIndex,
        StoredKv? requiredBase)
    {
        if (string.IsNullOrEmpty(sessionId)) throw new InvalidRequestException("session_id is empty");
        if (shape.Rope.HeadDim != shape.HeadDim) throw new InvalidRequestException($"the layout's RoPE table covers head_dim {shape.Rope.HeadDim}, not {shape.HeadDim}");
        var parsed = ParsePolicy(policy);
        if (parsed is QFiltersPolicy { Filters: var f } && (f.Layers, f.KvHeads, f.HeadDim) != (shape.Layers, shape.KvHeads, shape.HeadDim))
            throw new InvalidRequestException($"the Q-Filters are [{f.Layers}, {f.KvHeads}, {f.HeadDim}] but this KV is [{shape.Layers}, {shape.KvHeads}, {shape.HeadDim}]: calibrate for this model");
        var layers = Validate(shape, blocks);
        int received = layers[0].MostTokens;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        if (parsed.Budget is int budget && layers.Any(l => l.Positions.Any(p => p.Length > budget)))
            layers = Compress(shape, parsed, tokensSeen, layers);
        var elapsed = sw.Elapsed;

        return (Store(sessionId, new StoredKv(sessionId, shape, layers, tokensSeen, parsed.Name, 0, checkpoint, outputIndex, received), requiredBase), elapsed);
    }

    /// <summary>Stores <paramref name="kv"/> as the session's next version (numbered here).</summary>
    private StoredKv Store(string sessionId, StoredKv kv, StoredKv? requiredBase)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            SweepIfDue();
            // A spilled session continues where it left off: its versions (the first one included) come back with it.
            bool inMemory = _sessions.TryGetValue(sessionId, out var old);
            var versions = inMemory ? old.Versions : _spill?.TryRead(sessionId) ?? [];
            if (requiredBase is { } rb && !versions.Any(v => v.Version == rb.Version && v.TokensSeen == rb.TokensSeen))
                throw new KvBaseMissingException($"session '{sessionId}' lost version {rb.Version} while the delta on it was applied");
            // Kept as changes to a first version that is no longer the session's (spilled and read back, or replaced): whole.
            if (kv.Over is { } over && (versions.Count == 0 || !ReferenceEquals(versions[0], over))) kv = kv.Whole();
            long loaded = inMemory ? 0 : versions.Sum(v => v.Bytes);
            kv = kv with { Version = versions.Count > 0 ? versions[^1].Version + 1 : 1 };
            // Drop the oldest checkpoint beyond the limit, never the first version (index 0).
            bool drop = versions.Count > VersionsKept;
            long freed = drop ? versions[1].Bytes : 0;
            MakeRoom(loaded + kv.Bytes - freed, sessionId);
            if (drop) versions.RemoveAt(1);
            versions.Add(kv);
            _bytes += loaded + kv.Bytes - freed;
            _sessions[sessionId] = (versions, Now);
            if (!inMemory) _spill?.Delete(sessionId);   // memory holds the newest now; the file would be stale
            return kv;
        }
    }

    /// <summary>
    /// An incremental checkpoint (issue 17): <paramref name="deltas"/> applied onto the stored version
    /// <paramref name="baseVersion"/> (which must cover <paramref name="baseTokenCount"/> tokens and have
    /// this shape), stored as a new version as <see cref="Put"/> stores a whole cache. A delta on the
    /// session's first version, or on a version kept as changes to it, is kept as the changes to the
    /// first version (<see cref="StoredKv.Over"/>: composed with the base's, so its cost is the tokens
    /// changed since the first version, not the cache); it is made whole when read (a get, the spill).
    /// Materializing every checkpoint on arrival had been 77 % of the cache manager's CPU in a 400-token
    /// stream, most of it the kernel clearing fresh pages for each new copy (bench/RESULTS.md).
    /// </summary>
    /// <exception cref="KvBaseMissingException">The base version is not here (the writer sends the whole cache instead).</exception>
    public (StoredKv Kv, TimeSpan CompressionTime) PutDelta(string sessionId, KvShape shape, string policy, int tokensSeen, long baseVersion, int baseTokenCount,
        IReadOnlyList<(WireKvBlock Sent, int[][] Removed)> deltas, bool checkpoint, int outputIndex)
    {
        if (string.IsNullOrEmpty(sessionId)) throw new InvalidRequestException("session_id is empty");
        if (baseVersion <= 0) throw new InvalidRequestException($"base_version must be > 0 for a delta, got {baseVersion}");
        var (b, first) = Find(sessionId, baseVersion, 0);
        if (b is null || b.TokensSeen != baseTokenCount)
            throw new KvBaseMissingException($"session '{sessionId}' has no version {baseVersion}" + (b is null ? "" : $" with {baseTokenCount} tokens (it has {b.TokensSeen})"));
        if ((b.Shape.Layers, b.Shape.KvHeads, b.Shape.HeadDim, b.Shape.Precision) != (shape.Layers, shape.KvHeads, shape.HeadDim, shape.Precision))
            throw new KvBaseMissingException($"session '{sessionId}' version {baseVersion} is stored as [{b.Shape.Layers}, {b.Shape.KvHeads}, {b.Shape.HeadDim}] {b.Shape.Precision.Name()}, the delta is [{shape.Layers}, {shape.KvHeads}, {shape.HeadDim}] {shape.Precision.Name()}");
        var over = b.Over ?? (ReferenceEquals(b, first) ? b : null);
        if (over is null)
            return Put(sessionId, shape, policy, tokensSeen, KvDelta.Apply(b.Layers, deltas, shape.HeadDim), checkpoint, outputIndex, requiredBase: b);
        var changes = KvDelta.Compose(over.Layers, b.Over is null ? null : b.Changes, deltas, shape.HeadDim, out int[] most);
        var parsed = ParsePolicy(policy);
        if (parsed.Budget is int budget && most.Max() > budget) // compressed on arrival: that takes the whole cache
            return Put(sessionId, shape, policy, tokensSeen, KvDelta.Apply(over.Layers, changes, shape.HeadDim), checkpoint, outputIndex, requiredBase: b);
        var kv = new StoredKv(sessionId, shape, [.. changes.Select(c => c.Sent)], tokensSeen, parsed.Name, 0, checkpoint, outputIndex, most[0])
        {
            Over = over,
            Removed = [.. changes.Select(c => c.Removed)],
            KeptTokens = most[0],
        };
        return (Store(sessionId, kv, requiredBase: b), TimeSpan.Zero);
    }

    /// <summary>
    /// A version of the session's KV, or null: <paramref name="version"/> exactly, or with 0 the newest
    /// holding at most <paramref name="maxTokens"/> tokens (0: any). Reading counts as use. A spilled
    /// session is read back into memory (evicting others if need be); if memory cannot take it, it is
    /// served from the spill and stays there.
    /// </summary>
    public StoredKv? Get(string sessionId, long version = 0, int maxTokens = 0) => Find(sessionId, version, maxTokens).Kv?.Whole();

    /// <summary>The newest version's description (session, shape, policy, version, tokens, output index) without
    /// its blocks (<see cref="StoredKv.Layers"/> empty): a version kept as changes is not made whole for it.
    /// Counts as use, as <see cref="Get"/> does.</summary>
    public StoredKv? Describe(string sessionId) => Find(sessionId, 0, 0).Kv is { } kv
        ? kv with { Layers = [], Over = null, Removed = null, KeptTokens = kv.KeptTokens }
        : null;

    /// <summary>As <see cref="Get"/>, the version as stored (possibly as changes), and the session's first version.</summary>
    private (StoredKv? Kv, StoredKv? First) Find(string sessionId, long version, int maxTokens)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            SweepIfDue();
            List<StoredKv> versions;
            if (_sessions.TryGetValue(sessionId, out var e)) versions = e.Versions;
            else if (_spill?.TryRead(sessionId) is { } spilled)
            {
                versions = spilled;
                long bytes = versions.Sum(v => v.Bytes);
                try { MakeRoom(bytes, sessionId); }
                catch (KvStoreFullException) { return (Select(versions, version, maxTokens), versions.FirstOrDefault()); }
                _bytes += bytes;
                _spill.Delete(sessionId);
            }
            else return (null, null);
            _sessions[sessionId] = (versions, Now);
            return (Select(versions, version, maxTokens), versions.FirstOrDefault());
        }
    }

    private static StoredKv? Select(List<StoredKv> versions, long version, int maxTokens) => version != 0
        ? versions.FirstOrDefault(v => v.Version == version)
        : versions.LastOrDefault(v => maxTokens <= 0 || v.TokensSeen <= maxTokens);

    /// <summary>Forgets the session, in memory and in the spill; false when neither had it.</summary>
    public bool Release(string sessionId)
    {
        lock (_lock)
        {
            bool spilled = _spill?.Delete(sessionId) ?? false;
            if (!_sessions.Remove(sessionId, out var e)) return spilled;
            _bytes -= e.Versions.Sum(v => v.Bytes);
            return true;
        }
    }

    private DateTime Now => _time.GetUtcNow().UtcDateTime;

    /// <summary>A put's policy (dense when empty); positions past the model's context are allowed, as a stream's are.</summary>
    private KvCompressionPolicy ParsePolicy(string policy) =>
        Mapping.PolicyMapping.Parse(string.IsNullOrEmpty(policy) ? "dense" : policy, _policyOptions with { AllowExtrapolation = true });

    /// <summary>
    /// Evicts sessions until <paramref name="extra"/> more bytes fit: idle past the TTL first, then
    /// least recently used among those idle at least <see cref="MinIdle"/>, never <paramref name="keep"/>.
    /// The whole plan is made first, so a refused put evicts nothing.
    /// </summary>
    private void MakeRoom(long extra, string keep)
    {
        if (_bytes + extra <= BudgetBytes) return;
        var now = Now;
        var candidates = _sessions
            .Where(s => s.Key != keep && (now - s.Value.LastUsed >= MinIdle || now - s.Value.LastUsed > Ttl))
            .Select(s => (Id: s.Key, s.Value.LastUsed, Bytes: s.Value.Versions.Sum(v => v.Bytes),
                Reason: now - s.Value.LastUsed > Ttl ? KvEvictionReason.Ttl : KvEvictionReason.Lru))
            .OrderBy(c => c.Reason).ThenBy(c => c.LastUsed).ThenBy(c => c.Id, StringComparer.Ordinal)
            .ToList();
        long after = _bytes + extra;
        int take = 0;
        while (after > BudgetBytes && take < candidates.Count) after -= candidates[take++].Bytes;
        if (after > BudgetBytes)
        {
            long needed = _bytes + extra - BudgetBytes;
            long freeable = candidates.Sum(c => c.Bytes);
            int young = _sessions.Count - candidates.Count - (_sessions.ContainsKey(keep) ? 1 : 0);
            throw new KvStoreFullException(extra > BudgetBytes
                ? $"KV store full: {extra} bytes needed, more than the whole budget of {BudgetBytes}"
                : $"KV store full: {needed} bytes over the budget of {BudgetBytes} needed, but evicting every session idle at least {MinIdle.TotalSeconds:F0} s frees only {freeable}" +
                  $" ({young} sessions used more recently are not evicted)");
        }
        foreach (var c in candidates.Take(take)) Evict(c.Id, c.Reason);
    }

    /// <summary>Evicts (to the spill, if any) every session idle past the TTL, once per <see cref="SweepInterval"/>.</summary>
    private void SweepIfDue()
    {
        var now = Now;
        if (now < _nextSweep) return;
        _nextSweep = now + SweepInterval;
        foreach (var id in _sessions.Where(s => now - s.Value.LastUsed > Ttl).Select(s => s.Key).ToList()) Evict(id, KvEvictionReason.Ttl);
    }

    private void Evict(string id, KvEvictionReason reason)
    {
        _sessions.Remove(id, out var e);
        _bytes -= e.Versions.Sum(v => v.Bytes);
        _evictions[(int)reason]++;
        if (_spill is not null) _evictions[(int)KvEvictionReason.SpillFull] += _spill.Write(id, [.. e.Versions.Select(v => v.Whole())]);
    }

    private static WireKvBlock[] Validate(KvShape shape, IReadOnlyList<WireKvBlock> blocks)
    {
        if (blocks.Count != shape.Layers) throw new InvalidRequestException($"expected {shape.Layers} layer blocks, got {blocks.Count}");
        var layers = new WireKvBlock[shape.Layers];
        foreach (var b in blocks)
        {
            if ((uint)b.Layer >= layers.Length || layers[b.Layer] is not null) throw new InvalidRequestException($"layer {b.Layer} is out of range or sent twice");
            if (b.Positions.Length != shape.KvHeads) throw new InvalidRequestException($"layer {b.Layer} has {b.Positions.Length} KV heads, the layout {shape.KvHeads}");
            if (b.Positions.Select(p => p.Length).Distinct().Count() > 1) throw new InvalidRequestException($"layer {b.Layer}: heads hold different token counts");
            long bytes = (long)b.Positions.Sum(p => p.Length) * shape.HeadDim * shape.Precision.Bytes();
            if (b.Precision != shape.Precision || b.Keys.Length != bytes || b.Values.Length != bytes)
                throw new InvalidRequestException($"layer {b.Layer}: {b.Precision.Name()} data of {b.Keys.Length} + {b.Values.Length} bytes, the layout's {shape.Precision.Name()} needs {bytes} each");
            layers[b.Layer] = b;
        }
        return layers;
    }

    /// <summary>Runs the policy's bulk compression on a host cache built from the blocks (widened to
    /// fp32, exactly), and stores the result back in the blocks' precision.</summary>
    private WireKvBlock[] Compress(KvShape shape, KvCompressionPolicy policy, int tokensSeen, WireKvBlock[] layers)
    {
        int most = layers.Max(l => l.MostTokens);
        using var cache = new SequenceKvCache(_backend, shape.Layers, shape.KvHeads, shape.HeadDim, most, policy);
        lock (_backend)
        {
            foreach (var b in layers) KvCacheSnapshot.Restore(_backend, cache, b.ToFloats());
            KvCacheSnapshot.SetTokensSeen(cache, tokensSeen);
            policy.Compress(_backend, shape.Rope, cache);
            return Enumerable.Range(0, shape.Layers).Select(l => WireKvBlock.From(KvCacheSnapshot.Capture(_backend, cache, l), shape.Precision)).ToArray();
        }
    }

    /// <summary>
    /// Spills every session still in memory, least recently used first (so that if the spill's budget
    /// runs out, it is the oldest that are deleted), so a restart on the same directory loses nothing.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_spill is not null)
                foreach (var (id, e) in _sessions.OrderBy(s => s.Value.LastUsed).ThenBy(s => s.Key, StringComparer.Ordinal).ToList())
                    _evictions[(int)KvEvictionReason.SpillFull] += _spill.Write(id, [.. e.Versions.Select(v => v.Whole())]);
            _sessions.Clear();
            _bytes = 0;
        }
        _backend.Dispose();
    }
}
