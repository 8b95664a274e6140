namespace Cluster.Engine.Tokenizers;

/// <summary>What a BPE variant says about merging two adjacent symbols.</summary>
internal interface IMergeRule
{
    /// <summary>True when <paramref name="left"/> followed by <paramref name="right"/> may merge into
    /// <paramref name="id"/>; a higher <paramref name="priority"/> merges first.</summary>
    bool TryMerge(ReadOnlySpan<char> text, in BpeSymbol left, in BpeSymbol right, out int id, out float priority);
}

/// <summary>One symbol of a word being merged: a run of <see cref="Length"/> chars at <see cref="Start"/>
/// with token id <see cref="Id"/> (-1 when the run is not itself a token).</summary>
internal struct BpeSymbol
{
    public int Start, Length, Id, Prev, Next;
}

/// <summary>
/// The greedy BPE merge loop shared by SentencePiece (highest piece score first, SentencePiece
/// bpe_model.cc), llama2.c (same rule) and Hugging Face BPE (lowest merge rank first): repeatedly merge
/// the best adjacent pair, leftmost on ties. A heap of candidate pairs over a linked list of symbols makes
/// it O(n log n) instead of the O(n^2) rescan of llama2.c's run.c, so a 100 KB line with no spaces stays fast.
/// Heap entries are never removed; an entry is stale when either side has changed length since it was pushed.
/// </summary>
internal sealed class BpeMerger
{
    private readonly struct Candidate(int left, int leftLength, int rightLength, int id)
    {
        public readonly int Left = left, LeftLength = leftLength, RightLength = rightLength, Id = id;
    }

    private readonly PriorityQueue<Candidate, long> _heap = new();

    /// <summary>The heap order as one ascending long: higher priority first, then the pair that starts first
    /// (the leftmost). The float's bits are made to sort as integers (flip all bits of negatives, the sign
    /// bit of the rest), then inverted so that a higher priority gives a smaller key; the final xor makes
    /// the unsigned order of (priority, start) the signed order the heap compares.</summary>
    internal static long HeapKey(float priority, int start)
    {
        var bits = BitConverter.SingleToInt32Bits(priority);
        var ascending = (uint)(bits < 0 ? ~bits : bits | int.MinValue);
        return (long)(((ulong)~ascending << 32 | (uint)start) ^ 0x8000_0000_0000_0000UL);
    }

    /// <summary>Merges <paramref name="symbols"/> (a linked list in array order, index 0 first) in place.
    /// Merged-away symbols get Length 0; walk the result with <see cref="BpeSymbol.Next"/> from 0.</summary>
    public void Merge<TRule>(ReadOnlySpan<char> text, Span<BpeSymbol> symbols, ref TRule rule) where TRule : struct, IMergeRule
    {
        _heap.Clear();
        for (var i = 0; i + 1 < symbols.Length; i++) Push(text, symbols, i, ref rule);
        while (_heap.TryDequeue(out var c, out _))
        {
            ref var left = ref symbols[c.Left];
            if (left.Length != c.LeftLength || left.Next < 0) continue;
            ref var right = ref symbols[left.Next];
            if (right.Length != c.RightLength) continue;

            left.Length += right.Length;
            left.Id = c.Id;
            right.Length = 0;
            left.Next = right.Next;
            if (left.Next >= 0) symbols[left.Next].Prev = c.Left;
            if (left.Prev >= 0) Push(text, symbols, left.Prev, ref rule);
            Push(text, symbols, c.Left, ref rule);
        }
    }

    private void Push<TRule>(ReadOnlySpan<char> text, Span<BpeSymbol> symbols, int leftIndex, ref TRule rule) where TRule : struct, IMergeRule
    {
        ref readonly var left = ref symbols[leftIndex];
        if (left.Next < 0) return;
        ref readonly var right = ref symbols[left.Next];
        if (rule.TryMerge(text, left, right, out var id, out var priority))
            _heap.Enqueue(new Candidate(leftIndex, left.Length, right.Length, id), HeapKey(priority, left.Start));
    }
}
