using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

namespace Cluster.Engine.Compression;

/// <summary>
/// The fast path of window(W) and sink_window(S, W): they always evict the oldest non-sink tokens, so
/// nothing needs scoring or sorting, and one decode step costs O(1) row moves instead of a pass over
/// the cache (issue 16).
///
/// Slots as a set: attention is a softmax over a head's slots, so their order does not matter as long
/// as each key carries the right rotation and a chunk's own tokens are the last slots (the causal mask
/// counts from the end). An evicted slot is therefore filled with the head's last slot (one row moved)
/// and the next token is appended after it as usual. The window then sits in the slots in ring order;
/// <see cref="KvCacheLayer.Positions"/> still says each slot's original position, and
/// <see cref="KvCacheSnapshot.Capture"/> hands out the tokens in original order.
///
/// Rotation frame (cache positions, sink_window): StreamingLLM puts the key of rank r (its index among
/// the kept tokens in original order) at position r and the query at the cache length n. Attention
/// sees only the difference query - key, so every rotation may be shifted by the same origin F. With
/// F = E mod P, E = TokensSeen - n (the tokens evicted so far) and P the budget, evicting m tokens
/// moves F by m (mod P) and lowers every window key's rank by m: window keys keep their rotation and
/// only the sinks turn by m, O(S) per step. When F wraps (once every P evictions) every kept key turns
/// back by P, an O(n) pass that amortizes to O(1) per step and keeps rotations below 2P + a chunk,
/// so a long stream never rotates at large angles (where float rounding would grow).
/// The frame depends only on TokensSeen and the cache length, both of which a snapshot carries, so a
/// restored cache continues in the same frame.
///
/// Invariant (kept by these two policies; a cache belongs to one policy): the sinks are the tokens
/// at original positions below S and sit in the leading slots, every other token is among the newest.
/// </summary>
internal static class OldestFirstEviction
{
    /// <summary>Origin of the rotation frame: rank r is rotated at origin + r, the next query at origin + n.</summary>
    public static int FrameOrigin(SequenceKvCache cache, int period) => FrameOrigin((long)cache.TokensSeen - cache.Length, period);

    private static int FrameOrigin(long evicted, int period) => (int)(evicted % period);

    /// <summary>Evicts down to <paramref name="keep"/> slots per head: the oldest non-sink tokens (then,
    /// if a chunk leaves room for fewer than the sinks, the newest sinks).</summary>
    /// <param name="sinks">S: tokens at original positions below it are kept first.</param>
    /// <param name="period">P of the rotation frame for cache positions; 0 for original positions (no rotation).</param>
    /// <param name="scope">The layers to evict in and the token count (<see cref="EvictionScope.Whole"/>: all, the cache's).</param>
    public static void Evict(IComputeBackend backend, RopeTable rope, SequenceKvCache cache, int keep, int sinks, int period, EvictionScope scope)
    {
        var scratch = _scratch ??= new Scratch();
        for (int l = scope.FromLayer; l < scope.ToLayer; l++)
        {
            var layer = cache.Layers[l];
            for (int h = 0; h < layer.KvHeads; h++)
            {
                int n = layer.Lengths[h];
                if (n <= keep) continue;
                var positions = layer.Positions.AsSpan(h * layer.Capacity, n);
                int sinkCount = LeadingSinks(positions, sinks);
                long evictedBefore = (long)scope.TokensSeen - n;
                scratch.Ensure(n);
                if (keep > sinkCount)
                {
                    if (n - keep == 1) EvictOne(backend, layer, h, scope.TokensSeen, sinkCount);
                    else EvictMany(backend, layer, h, keep, sinkCount, scratch);
                }
                // else: every window token and the newest sinks go; the slots to keep are the leading ones.
                layer.Lengths[h] = keep;
                layer.Rewritten();
                if (period > 0) Rerotate(backend, rope, layer, h, keep, Math.Min(sinkCount, keep), evictedBefore, n - keep, period, scratch);
            }
        }
    }

    /// <summary>Sinks in the leading slots (a dense prefill, a restore and this class all leave them there).</summary>
    private static int LeadingSinks(ReadOnlySpan<int> positions, int sinks)
    {
        int count = 0;
        while (count < positions.Length && count < sinks && positions[count] < sinks) count++;
        return count;
    }

    /// <summary>A decode step: the oldest window token is where the hint says (checked), else found by one scan.</summary>
    private static void EvictOne(IComputeBackend backend, KvCacheLayer layer, int h, int tokensSeen, int sinkCount)
    {
        int n = layer.Lengths[h];
        var positions = layer.Positions.AsSpan(h * layer.Capacity, n);
        int oldest = tokensSeen - (n - sinkCount);          // the window is the newest n - sinkCount tokens
        int slot = layer.OldestSlotHint[h];
        if (slot < sinkCount || slot >= n || positions[slot] != oldest) slot = ScanOldest(positions, sinkCount);
        if (slot != n - 1) backend.MoveKvSlot(layer, h, n - 1, slot);
        // In the steady state the next oldest is the following slot; the last slot is the newest once
        // the next token is appended there, so the ring wraps back to the first window slot.
        layer.OldestSlotHint[h] = slot + 1 < n - 1 ? slot + 1 : sinkCount;
    }

    private static int ScanOldest(ReadOnlySpan<int> positions, int from)
    {
        int best = from;
        for (int i = from + 1; i < positions.Length; i++)
            if (positions[i] < positions[best]) best = i;
        return best;
    }

    /// <summary>Several at once (a chunk, a new turn's room, a bulk compression): rare, so a sort is fine.
    /// The m oldest window slots are holes; holes below keep are filled from the surviving slots above it.</summary>
    private static void EvictMany(IComputeBackend backend, KvCacheLayer layer, int h, int keep, int sinkCount, Scratch s)
    {
        int n = layer.Lengths[h], m = n - keep, w = n - sinkCount;
        var positions = layer.Positions.AsSpan(h * layer.Capacity, n);
        for (int i = 0; i < w; i++)
        {
            s.Keys[i] = positions[sinkCount + i];
            s.Slots[i] = sinkCount + i;
        }
        Array.Sort(s.Keys, s.Slots, 0, w);                  // window slots, oldest first
        Array.Clear(s.Hole, 0, n);
        for (int i = 0; i < m; i++) s.Hole[s.Slots[i]] = true;
        int nextOldest = m < w ? s.Keys[m] : -1;
        for (int hole = sinkCount, from = keep; hole < keep; hole++)
        {
            if (!s.Hole[hole]) continue;
            while (s.Hole[from]) from++;                    // as many survivors above keep as holes below it
            backend.MoveKvSlot(layer, h, from++, hole);
        }
        int hint = sinkCount;
        for (int i = sinkCount; i < keep; i++)
            if (positions[i] == nextOldest) hint = i;
        layer.OldestSlotHint[h] = hint;
    }

    /// <summary>Turns the kept keys to the new frame: sinks by the origin's move, window keys only when it wraps.</summary>
    private static void Rerotate(IComputeBackend backend, RopeTable rope, KvCacheLayer layer, int h, int keep, int sinks,
        long evictedBefore, int evicted, int period, Scratch s)
    {
        int origin = FrameOrigin(evictedBefore, period), next = FrameOrigin(evictedBefore + evicted, period);
        int sinkDelta = next - origin;                       // sinks keep their rank
        int windowDelta = next - origin - evicted;           // window ranks drop by `evicted`: 0 unless the origin wrapped
        int count = windowDelta != 0 ? keep : sinkDelta != 0 ? sinks : 0;
        if (count == 0) return;
        var deltas = s.Deltas.AsSpan(0, count);
        for (int j = 0; j < count; j++) deltas[j] = j < sinks ? sinkDelta : windowDelta;
        backend.RotateKeys(layer, h, deltas, rope);
    }

    // Per-thread scratch, so that a decode step allocates nothing while policies serve many sequences.
    [ThreadStatic] private static Scratch? _scratch;

    private sealed class Scratch
    {
        public int[] Keys = [], Slots = [], Deltas = [];
        public bool[] Hole = [];

        public void Ensure(int slots)
        {
            if (Keys.Length < slots) (Keys, Slots, Deltas, Hole) = (new int[slots], new int[slots], new int[slots], new bool[slots]);
        }
    }
}
