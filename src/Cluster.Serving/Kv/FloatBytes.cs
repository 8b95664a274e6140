using System.Buffers;
using System.Runtime.InteropServices;

namespace Cluster.Serving.Kv;

/// <summary>
/// The bytes of a float[] as <see cref="Memory{T}"/> of bytes, without copying, so that protobuf can
/// wrap a KV block's data (<c>UnsafeByteOperations.UnsafeWrap</c>) instead of copying it twice into
/// chunks. The array must not change while a message that wraps it is being sent: KV blocks are
/// snapshots that nothing writes after they are made.
/// </summary>
internal sealed unsafe class FloatBytes(float[] array) : MemoryManager<byte>
{
    public override Span<byte> GetSpan() => MemoryMarshal.AsBytes(array.AsSpan());

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        var handle = GCHandle.Alloc(array, GCHandleType.Pinned);
        return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle, this);
    }

    public override void Unpin() { }

    protected override void Dispose(bool disposing) { }
}
