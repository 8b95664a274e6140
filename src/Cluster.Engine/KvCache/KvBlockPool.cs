namespace Cluster.Engine.KvCache;

/// <summary>
/// A fixed number of KV blocks of <see cref="BlockSize"/> token slots each, handed out by id from one
/// free queue with reference counts (vLLM v1's <c>BlockPool</c>). Allocation takes blocks from the head
/// of the queue and freeing appends them to its tail, so the order in which ids come back is exact and
/// testable. Running out is an answer (<see cref="TryAllocate"/> returns false), never an exception: the
/// scheduler then queues or preempts.
/// </summary>
public sealed class KvBlockPool
{
    private readonly LinkedList<int> _free = new();
    private readonly int[] _refCounts;

    public KvBlockPool(int numBlocks, int blockSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(numBlocks);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        _refCounts = new int[numBlocks];
        for (int id = 0; id < numBlocks; id++) _free.AddLast(id);
    }

    /// <summary>Blocks that fit a byte budget, for a model's KV shape (K and V of every layer and KV head).</summary>
    public static int BlocksForBudget(long budgetBytes, int blockSize, int layers, int kvHeads, int headDim, int bytesPerValue = sizeof(float)) =>
        (int)Math.Min(int.MaxValue, budgetBytes / BlockBytes(blockSize, layers, kvHeads, headDim, bytesPerValue));

    /// <summary>Bytes of one block: K and V, every layer and KV head, <paramref name="blockSize"/> slots.</summary>
    public static long BlockBytes(int blockSize, int layers, int kvHeads, int headDim, int bytesPerValue = sizeof(float)) =>
        2L * blockSize * layers * kvHeads * headDim * bytesPerValue;

    public int NumBlocks { get; }
    public int BlockSize { get; }
    public int FreeBlocks => _free.Count;

    /// <summary>Fraction of blocks in use (the <c>llm_kv_cache_usage_ratio</c> gauge).</summary>
    public double Usage => NumBlocks == 0 ? 0 : 1.0 - (double)_free.Count / NumBlocks;

    /// <summary>Free block ids from head to tail: the order the next allocations take them in.</summary>
    public IReadOnlyList<int> FreeQueue => [.. _free];

    public int RefCount(int block) => _refCounts[block];

    /// <summary>Takes <paramref name="count"/> blocks (reference count 1) from the head of the free queue
    /// into <paramref name="into"/>; false, taking none, when fewer are free.</summary>
    public bool TryAllocate(int count, List<int> into)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count > _free.Count) return false;
        for (int i = 0; i < count; i++)
        {
            int id = _free.First!.Value;
            _free.RemoveFirst();
            _refCounts[id] = 1;
            into.Add(id);
        }
        return true;
    }

    /// <summary>One more holder of <paramref name="block"/> (a fork sharing it).</summary>
    public void AddRef(int block)
    {
        if (_refCounts[block] <= 0) throw new InvalidOperationException($"block {block} is free");
        _refCounts[block]++;
    }

    /// <summary>Drops one reference to each block, in order; a block whose count reaches 0 goes to the
    /// tail of the free queue.</summary>
    public void Free(IEnumerable<int> blocks)
    {
        foreach (var id in blocks)
        {
            if (_refCounts[id] <= 0) throw new InvalidOperationException($"block {id} freed twice");
            if (--_refCounts[id] == 0) _free.AddLast(id);
        }
    }
}
