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
}
