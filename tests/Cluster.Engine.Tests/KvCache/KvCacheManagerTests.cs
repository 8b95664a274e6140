using Cluster.Engine.KvCache;
using Xunit;

namespace Cluster.Engine.Tests.KvCache;

/// <summary>Block ids and free-queue order after each operation, in the style of vLLM's
/// tests/v1/core/test_kv_cache_utils.py and test_prefix_caching.py (exact ids, CPU only).</summary>
public sealed class KvCacheManagerTests
{
    private static KvCacheManager Manager(int blocks, int blockSize = 4) => new(new KvBlockPool(blocks, blockSize));

    [Fact]
    public void Allocation_takes_blocks_from_the_head_of_the_free_queue()
    {
        var m = Manager(6);
        Assert.True(m.TryAllocate(1, 5)); // 5 tokens: 2 blocks of 4
        Assert.Equal([0, 1], m.BlockTable(1));
        Assert.True(m.TryAllocate(2, 4));
        Assert.Equal([2], m.BlockTable(2));
        Assert.Equal([3, 4, 5], m.Pool.FreeQueue);
        // Three more tokens of sequence 1 fit in its second block: nothing is taken.
        Assert.True(m.TryAllocate(1, 3));
        Assert.Equal([0, 1], m.BlockTable(1));
        Assert.Equal(8, m.Tokens(1));
        // The ninth token opens a third block.
        Assert.True(m.TryAllocate(1, 1));
        Assert.Equal([0, 1, 3], m.BlockTable(1));
        Assert.Equal(0.5 + 1.0 / 6, m.Pool.Usage, 12);
    }

    [Fact]
    public void Free_returns_tail_blocks_first_to_the_end_of_the_queue()
    {
        var m = Manager(6);
        m.TryAllocate(1, 12); // blocks 0 1 2
        m.TryAllocate(2, 4);  // block 3
        m.Free(1);
        Assert.Equal([4, 5, 2, 1, 0], m.Pool.FreeQueue);
        Assert.Empty(m.BlockTable(1));
        Assert.True(m.TryAllocate(3, 8));
        Assert.Equal([4, 5], m.BlockTable(3));
    }

    [Fact]
    public void TryAllocate_is_false_at_the_budget_and_takes_nothing()
    {
        var m = Manager(3);
        Assert.True(m.TryAllocate(1, 8));
        Assert.False(m.TryAllocate(2, 5)); // needs 2, one is free
        Assert.False(m.Contains(2));
        Assert.Equal([2], m.Pool.FreeQueue);
        Assert.False(m.TryAllocate(1, 5)); // 13 tokens need 4 blocks
        Assert.Equal(8, m.Tokens(1));
        Assert.Equal([0, 1], m.BlockTable(1));
        Assert.True(m.TryAllocate(2, 4));
        Assert.Equal(0, m.Pool.FreeBlocks);
    }

    [Fact]
    public void Fork_shares_blocks_and_copies_the_partly_filled_one_on_write()
    {
        var m = Manager(8);
        m.TryAllocate(1, 6); // blocks 0 1; block 1 half full
        m.Fork(1, 2);
        Assert.Equal([0, 1], m.BlockTable(2));
        Assert.Equal(2, m.Pool.RefCount(0));
        Assert.Equal(2, m.Pool.RefCount(1));
        Assert.Equal(1 + 1, m.BlocksNeeded(2, 3)); // 9 tokens need a third block, plus the copy

        var copies = new List<KvCacheManager.BlockCopy>();
        Assert.True(m.TryAllocate(2, 1, copies));
        Assert.Equal([new KvCacheManager.BlockCopy(1, 2)], copies);
        Assert.Equal([0, 2], m.BlockTable(2));
        Assert.Equal(1, m.Pool.RefCount(1));
        // The parent now owns block 1 alone: its next token writes in place.
        copies.Clear();
        Assert.True(m.TryAllocate(1, 1, copies));
        Assert.Empty(copies);
        Assert.Equal([0, 1], m.BlockTable(1));

        m.Free(1);
        Assert.Equal(1, m.Pool.RefCount(0)); // still the child's
        Assert.Equal([3, 4, 5, 6, 7, 1], m.Pool.FreeQueue);
        m.Free(2);
        Assert.Equal([3, 4, 5, 6, 7, 1, 2, 0], m.Pool.FreeQueue);
    }

    [Fact]
    public void A_fork_at_a_block_boundary_shares_full_blocks_without_copying()
    {
        var m = Manager(4);
        m.TryAllocate(1, 4);
        m.Fork(1, 2);
        var copies = new List<KvCacheManager.BlockCopy>();
        Assert.True(m.TryAllocate(2, 1, copies));
        Assert.Empty(copies);
        Assert.Equal([0, 1], m.BlockTable(2));
    }

    [Fact]
    public void Preempt_frees_the_newest_sequence_so_an_older_one_can_grow()
    {
        var m = Manager(4);
        m.TryAllocate(1, 8); // 0 1
        m.TryAllocate(2, 8); // 2 3
        Assert.False(m.TryAllocate(1, 1));
        m.Preempt(2);
        Assert.Equal([3, 2], m.Pool.FreeQueue);
        Assert.True(m.TryAllocate(1, 1));
        Assert.Equal([0, 1, 3], m.BlockTable(1));
        // The preempted sequence comes back later by recomputation, into whatever is free.
        Assert.True(m.TryAllocate(2, 4));
        Assert.Equal([2], m.BlockTable(2));
    }

    [Fact]
    public void Preempting_a_fork_returns_only_its_own_blocks_and_recomputation_takes_fresh_ones_from_the_head()
    {
        var m = Manager(6);
        m.TryAllocate(1, 6); // 0 1
        m.Fork(1, 2);        // shares 0 1
        var copies = new List<KvCacheManager.BlockCopy>();
        Assert.True(m.TryAllocate(2, 3, copies)); // writes into the shared, partly filled block 1: copied to 2
        Assert.Equal([new KvCacheManager.BlockCopy(1, 2)], copies);
        Assert.Equal([0, 2, 3], m.BlockTable(2));
        Assert.Equal([4, 5], m.Pool.FreeQueue);
        m.Preempt(2); // its own blocks go back tail first; the shared block 0 stays with the parent
        Assert.Equal([4, 5, 3, 2], m.Pool.FreeQueue);
        Assert.Equal(1, m.Pool.RefCount(0));
        Assert.Equal([0, 1], m.BlockTable(1));
        Assert.True(m.TryAllocate(2, 9)); // resumed by recomputation: a private table, nothing shared
        Assert.Equal([4, 5, 3], m.BlockTable(2));
        Assert.Equal([2], m.Pool.FreeQueue);
    }

    [Fact]
    public void Truncate_returns_blocks_past_the_kept_tokens()
    {
        var m = Manager(5);
        m.TryAllocate(1, 13); // 0 1 2 3
        m.Truncate(1, 5);
        Assert.Equal([0, 1], m.BlockTable(1));
        Assert.Equal([4, 3, 2], m.Pool.FreeQueue);
        Assert.Equal(5, m.Tokens(1));
    }

    [Fact]
    public void Budget_in_bytes_gives_whole_blocks()
    {
        // SmolLM2-135M's KV shape: 30 layers, 3 KV heads, head_dim 64, fp32, 16-token blocks.
        long block = KvBlockPool.BlockBytes(16, 30, 3, 64);
        Assert.Equal(2L * 16 * 30 * 3 * 64 * 4, block);
        Assert.Equal(10, KvBlockPool.BlocksForBudget(block * 10 + block - 1, 16, 30, 3, 64));
    }

    [Fact]
    public void Freeing_a_block_twice_is_a_bug_not_a_silent_leak()
    {
        var pool = new KvBlockPool(2, 4);
        var got = new List<int>();
        pool.TryAllocate(1, got);
        pool.Free(got);
        Assert.Throws<InvalidOperationException>(() => pool.Free(got));
    }
}
