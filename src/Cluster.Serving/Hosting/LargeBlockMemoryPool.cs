using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;

namespace Cluster.Serving.Hosting;

/// <summary>
/// A memory pool of large pinned blocks for Kestrel, for a service that receives bulk data (the cache
/// manager's PutBlocks: 10.9 MB per prompt). Kestrel's own pool hands out 4 KiB blocks, and its socket
/// transport receives into one block per call: a 10.9 MB put cost ~2,700 recv calls and about as many
/// again (the transport's zero-byte "wait for data" reads): ~5,600 syscalls and pipe hand-offs per transfer
/// (counted with `perf stat -e syscalls:sys_enter_recvfrom`), where the client's HttpClient reading a
/// get of the same bytes made ~1,400. Larger blocks mean larger reads, and fewer segments in every pipe
/// behind the socket (Kestrel's HTTP/2 input copy, each stream's request body).
/// <para>
/// Each pipe holds at least one block while it has data, so a connection or stream with anything
/// buffered holds <see cref="BlockSize"/> bytes: meant for services with few connections, not the gateway.
/// At most <see cref="MaxPooledBlocks"/> returned blocks are kept; the rest are left to the GC.
/// </para>
/// </summary>
public sealed class LargeBlockMemoryPool(int blockSize = LargeBlockMemoryPool.DefaultBlockSize, int maxPooledBlocks = LargeBlockMemoryPool.DefaultMaxPooledBlocks)
    : MemoryPool<byte>
{
    public const int DefaultBlockSize = 64 * 1024;
    public const int DefaultMaxPooledBlocks = 256; // 16 MiB kept at most

    private static long _blocksAllocated;

    /// <summary>Blocks allocated by every pool of this kind in the process (tests check that Kestrel uses the pool).</summary>
    public static long BlocksAllocated => Interlocked.Read(ref _blocksAllocated);

    private readonly ConcurrentQueue<Block> _free = new();
    private int _freeCount;
    private bool _disposed;

    public int BlockSize { get; } = blockSize > 0 ? blockSize : throw new ArgumentOutOfRangeException(nameof(blockSize));
    public int MaxPooledBlocks { get; } = maxPooledBlocks >= 0 ? maxPooledBlocks : throw new ArgumentOutOfRangeException(nameof(maxPooledBlocks));

    /// <summary>Blocks waiting in the pool (tests).</summary>
    public int PooledBlocks => Volatile.Read(ref _freeCount);

    public override int MaxBufferSize => BlockSize;

    /// <summary>A whole block (<see cref="BlockSize"/> bytes) for any size up to it; -1 means "the pool's choice", as in MemoryPool.</summary>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (minBufferSize > BlockSize) throw new ArgumentOutOfRangeException(nameof(minBufferSize), $"{minBufferSize} is more than the pool's block size {BlockSize}");
        if (_free.TryDequeue(out var block))
        {
            Interlocked.Decrement(ref _freeCount);
            block.Rented = 1;
            return block;
        }
        Interlocked.Increment(ref _blocksAllocated);
        // Pinned: the socket transport pins what it receives into, and a pinned-heap array costs nothing to pin.
        return new Block(this, GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true));
    }

    private void Return(Block block)
    {
        if (_disposed || Interlocked.Increment(ref _freeCount) > MaxPooledBlocks)
        {
            if (!_disposed) Interlocked.Decrement(ref _freeCount);
            return;
        }
        _free.Enqueue(block);
    }

    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        while (_free.TryDequeue(out _)) Interlocked.Decrement(ref _freeCount);
    }

    private sealed class Block(LargeBlockMemoryPool pool, byte[] array) : IMemoryOwner<byte>
    {
        // 1 while rented: a second Dispose of one rental must not put the block in the pool twice.
        public int Rented = 1;

        // Made as pinned so that Pin() (the socket's, per receive) takes no GC handle.
        public Memory<byte> Memory { get; } = System.Runtime.InteropServices.MemoryMarshal.CreateFromPinnedArray(array, 0, array.Length);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref Rented, 0) == 1) pool.Return(this);
        }
    }

    /// <summary>Kestrel asks the container's <see cref="IMemoryPoolFactory{T}"/> for its pools (ASP.NET Core 10); registering this one gives them large blocks.</summary>
    public sealed class Factory(int blockSize = DefaultBlockSize, int maxPooledBlocks = DefaultMaxPooledBlocks) : IMemoryPoolFactory<byte>
    {
        public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new LargeBlockMemoryPool(blockSize, maxPooledBlocks);
    }
}
