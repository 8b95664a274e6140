namespace Cluster.Engine.KvCache;

/// <summary>
/// Per-sequence block tables over one <see cref="KvBlockPool"/> (vLLM v1's <c>KVCacheManager</c>): a
/// sequence's tokens fill its blocks in order, block i holding tokens [i*B, (i+1)*B). Forks (n &gt; 1,
/// beam search) share their parent's blocks and copy a shared block only when they write into it
/// (copy-on-write). "No room" is the answer false; the caller queues the work or preempts a sequence
/// (<see cref="Preempt"/> frees its blocks; it is later recomputed or reloaded from a checkpoint).
/// </summary>
public sealed class KvCacheManager(KvBlockPool pool)
{
    private readonly Dictionary<long, Entry> _sequences = [];
    private readonly List<int> _scratch = [];

    private sealed class Entry
    {
        public List<int> Blocks { get; } = [];
        public int Tokens { get; set; }
    }

    /// <summary>A block to copy before a sequence writes into it: the shared <paramref name="From"/>
    /// becomes the sequence's own <paramref name="To"/>.</summary>
    public readonly record struct BlockCopy(int From, int To);

    public KvBlockPool Pool { get; } = pool;

    public IReadOnlyList<int> BlockTable(long seq) => _sequences.TryGetValue(seq, out var e) ? e.Blocks : [];

    public int Tokens(long seq) => _sequences.TryGetValue(seq, out var e) ? e.Tokens : 0;

    public bool Contains(long seq) => _sequences.ContainsKey(seq);

    /// <summary>Blocks that <paramref name="newTokens"/> more tokens of <paramref name="seq"/> would take
    /// from the pool (new blocks, plus a private copy of a shared, partly filled last block).</summary>
    public int BlocksNeeded(long seq, int newTokens)
    {
        var e = _sequences.GetValueOrDefault(seq);
        int tokens = e?.Tokens ?? 0, have = e?.Blocks.Count ?? 0;
        int needed = Math.Max(0, CeilDiv(tokens + newTokens, Pool.BlockSize) - have);
        if (newTokens > 0 && e is not null && WritesIntoSharedBlock(e)) needed++;
        return needed;
    }

    /// <summary>
    /// Makes room for <paramref name="newTokens"/> more tokens of <paramref name="seq"/> (a new sequence
    /// starts empty): all the blocks it needs, or none and false. When the sequence's next slot is in a
    /// block it shares with a fork, that block is replaced by a private copy, reported in
    /// <paramref name="copies"/> for the caller to copy the data before writing.
    /// </summary>
    public bool TryAllocate(long seq, int newTokens, List<BlockCopy>? copies = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(newTokens);
        if (BlocksNeeded(seq, newTokens) > Pool.FreeBlocks) return false;
        if (!_sequences.TryGetValue(seq, out var e)) _sequences[seq] = e = new Entry();
        if (newTokens > 0 && WritesIntoSharedBlock(e))
        {
            int last = e.Blocks.Count - 1, shared = e.Blocks[last];
            _scratch.Clear();
            Pool.TryAllocate(1, _scratch);
            e.Blocks[last] = _scratch[0];
            Pool.Free([shared]);
            copies?.Add(new BlockCopy(shared, _scratch[0]));
        }
        int more = CeilDiv(e.Tokens + newTokens, Pool.BlockSize) - e.Blocks.Count;
        if (more > 0) Pool.TryAllocate(more, e.Blocks);
        e.Tokens += newTokens;
        return true;
    }

    /// <summary><paramref name="child"/> starts as a copy of <paramref name="parent"/> that shares all its blocks.</summary>
    public void Fork(long parent, long child)
    {
        if (_sequences.ContainsKey(child)) throw new InvalidOperationException($"sequence {child} exists");
        var p = _sequences[parent];
        var c = new Entry { Tokens = p.Tokens };
        foreach (var b in p.Blocks)
        {
            Pool.AddRef(b);
            c.Blocks.Add(b);
        }
        _sequences[child] = c;
    }

    /// <summary>Drops trailing tokens (a compression policy evicted them, or a rollback), returning
    /// blocks that no longer hold any token.</summary>
    public void Truncate(long seq, int tokens)
    {
        var e = _sequences[seq];
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tokens, e.Tokens);
        int keep = CeilDiv(tokens, Pool.BlockSize);
        if (keep < e.Blocks.Count)
        {
            var dropped = e.Blocks.GetRange(keep, e.Blocks.Count - keep);
            e.Blocks.RemoveRange(keep, dropped.Count);
            dropped.Reverse();
            Pool.Free(dropped);
        }
        e.Tokens = tokens;
    }

    /// <summary>Frees a finished sequence's blocks. Tail blocks go back first (vLLM frees in reverse
    /// order), so the blocks a sequence filled last are reused first.</summary>
    public void Free(long seq)
    {
        if (!_sequences.Remove(seq, out var e)) return;
        e.Blocks.Reverse();
        Pool.Free(e.Blocks);
    }

    /// <summary>Takes a running sequence's blocks away to make room for others; it keeps its tokens
    /// elsewhere (its request, a checkpoint) and is recomputed when it resumes. Same as <see cref="Free"/>
    /// for the pool; a separate name because the scheduler's bookkeeping differs.</summary>
    public void Preempt(long seq) => Free(seq);

    private bool WritesIntoSharedBlock(Entry e) =>
        e.Tokens % Pool.BlockSize != 0 && e.Blocks.Count > 0 && Pool.RefCount(e.Blocks[^1]) > 1;

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
}
