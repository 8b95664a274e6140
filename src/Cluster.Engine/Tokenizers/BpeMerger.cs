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

    /// <summary>
    /// The most symbols whose buffers (this heap's, the tokenizers' per-thread symbol arrays) are kept for
    /// the next word. A longer word's buffers are let go when it is done: the buffers live as long as the
    /// thread (thread-static scratch), and one fuzzed request with a 79,000-character word had left
    /// 1.6 MiB of symbols (and the heap's array beside them) on a gateway thread-pool thread for good
    /// (a heap dump after bench fuzz, bench/RESULTS.md, issue 21). Natural words are far shorter; a text
    /// merged whole (SentencePiece without splitting at spaces) allocates per call past this.
    /// </summary>
    public const int KeptSymbols = 4096;

    /// <summary>What the heap can hold without growing (tests).</summary>
    internal int HeapCapacity => _heap.EnsureCapacity(0);

    /// <summary>A symbol buffer of at least <paramref name="count"/>: <paramref name="kept"/> (grown, up to
    /// <see cref="KeptSymbols"/>) or, for a longer word, a new array that is not kept.</summary>
    public static BpeSymbol[] Symbols(ref BpeSymbol[] kept, int count)
    {
        if (count > KeptSymbols) return new BpeSymbol[count];
        if (kept.Length < count) kept = new BpeSymbol[Math.Min(KeptSymbols, Math.Max(count, kept.Length * 2))];
        return kept;
    }

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
        if (HeapCapacity > KeptSymbols) _heap.TrimExcess(); // empty now: lets a long word's array go
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
