using Cluster.Engine.Tokenizers;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

public class BpeMergerTests
{
    [Fact]
    public void Heap_key_orders_by_priority_descending_then_start_ascending()
    {
        (float Priority, int Start)[] ordered =
        [
            (float.PositiveInfinity, 0), (1e9f, 3), (5f, 0), (5f, 1), (5f, int.MaxValue), (0.5f, 2), (0f, 0), (-0.25f, 0), (-0.25f, 9),
            (-3f, 1), (-61249f, 0), (-1e9f, 4), (float.NegativeInfinity, 0),
        ];
        for (var i = 0; i + 1 < ordered.Length; i++)
            Assert.True(BpeMerger.HeapKey(ordered[i].Priority, ordered[i].Start) < BpeMerger.HeapKey(ordered[i + 1].Priority, ordered[i + 1].Start), $"at {i}");
    }

    /// <summary>
    /// The tokenizers' symbol buffers and the merge heap live as long as their thread (thread-static
    /// scratch): a fuzzed request with a 79,000-character word had left 1.6 MiB of symbols on a gateway
    /// thread for good (bench/RESULTS.md, issue 21). A word past <see cref="BpeMerger.KeptSymbols"/> gets
    /// buffers that are not kept; shorter ones reuse the kept buffer.
    /// </summary>
    [Fact]
    public void A_long_words_symbol_buffer_is_not_kept()
    {
        var kept = new BpeSymbol[64];
        Assert.Same(kept, BpeMerger.Symbols(ref kept, 10));
        var grown = BpeMerger.Symbols(ref kept, 1000);
        Assert.Same(kept, grown);
        Assert.True(grown.Length >= 1000);

        var big = BpeMerger.Symbols(ref kept, 100_000);
        Assert.True(big.Length >= 100_000);
        Assert.NotSame(kept, big);
        Assert.True(kept.Length <= BpeMerger.KeptSymbols, $"kept {kept.Length} symbols");
    }

    [Fact]
    public void The_merge_heap_lets_a_long_words_array_go_and_still_merges_it()
    {
        var merger = new BpeMerger();
        const int n = 20_000;
        var text = new string('a', n);
        var symbols = new BpeSymbol[n];
        for (var i = 0; i < n; i++) symbols[i] = new BpeSymbol { Start = i, Length = 1, Id = 1, Prev = i - 1, Next = i + 1 };
        symbols[n - 1].Next = -1;
        var rule = new MergeAll();
        merger.Merge(text, symbols, ref rule);

        Assert.Equal(n, symbols[0].Length); // one symbol in the end
        Assert.Equal(-1, symbols[0].Next);
        Assert.True(merger.HeapCapacity <= BpeMerger.KeptSymbols, $"the heap kept room for {merger.HeapCapacity} candidates");
    }

    private struct MergeAll : IMergeRule
    {
        public bool TryMerge(ReadOnlySpan<char> text, in BpeSymbol left, in BpeSymbol right, out int id, out float priority)
        {
            id = 1;
            priority = 0;
            return true;
        }
    }
}
