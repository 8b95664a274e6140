using System.Diagnostics;
using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;

/// <summary>
/// Wraps a backend and adds up the wall time of each kind of call (matrix products by shape), so that a
/// prefill's time can be split into products, attention and the rest. Every call returns before the
/// next starts (the backend joins its threads inside each call), so the parts add up to the pass;
/// what is left over is the model's own code between calls.
/// </summary>
internal sealed class TimingBackend(IComputeBackend inner) : IComputeBackend
{
    public readonly Dictionary<string, (double Ms, int Calls)> Times = new();

    private void Add(string key, long start)
    {
        double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        Times[key] = Times.TryGetValue(key, out var t) ? (t.Ms + ms, t.Calls + 1) : (ms, 1);
    }

    public string Name => inner.Name;
    public int RowExactRows(WeightType format) => inner.RowExactRows(format);
    public Tensor Allocate(long length) => inner.Allocate(length);
    public Tensor LoadWeights(WeightData source) => inner.LoadWeights(source);
    public void CopyFromHost(ReadOnlySpan<float> source, Tensor destination, long offset = 0) => inner.CopyFromHost(source, destination, offset);
    public void CopyToHost(Tensor source, long offset, Span<float> destination) => inner.CopyToHost(source, offset, destination);
    public void CompactKv(KvCacheLayer layer, int head, ReadOnlySpan<int> keep) => inner.CompactKv(layer, head, keep);
    public void MoveKvSlot(KvCacheLayer layer, int head, int from, int to) => inner.MoveKvSlot(layer, head, from, to);
    public void RotateKeys(KvCacheLayer layer, int head, ReadOnlySpan<int> deltas, RopeTable rope) => inner.RotateKeys(layer, head, deltas, rope);
    public void Dispose() => inner.Dispose();

    public void Embed(Tensor table, ReadOnlySpan<int> tokens, int dim, Tensor x)
    { long t = Stopwatch.GetTimestamp(); inner.Embed(table, tokens, dim, x); Add("embed", t); }

    public void RmsNorm(Tensor x, Tensor weight, Tensor y, int rows, int dim, float eps)
    { long t = Stopwatch.GetTimestamp(); inner.RmsNorm(x, weight, y, rows, dim, eps); Add("rmsnorm", t); }

    public void MatMul(Tensor x, Tensor w, Tensor y, int rows, int inDim, int outDim, int xRowOffset = 0)
    { long t = Stopwatch.GetTimestamp(); inner.MatMul(x, w, y, rows, inDim, outDim, xRowOffset); Add($"matmul {rows}x{inDim}·{outDim}", t); }

    public void Rope(Tensor q, Tensor k, ReadOnlySpan<int> positions, int heads, int kvHeads, RopeTable rope)
    { long t = Stopwatch.GetTimestamp(); inner.Rope(q, k, positions, heads, kvHeads, rope); Add("rope", t); }

    public void AppendKv(Tensor k, Tensor v, int rowOffset, ReadOnlySpan<int> positions, KvCacheLayer layer)
    { long t = Stopwatch.GetTimestamp(); inner.AppendKv(k, v, rowOffset, positions, layer); Add("append kv", t); }

    public void Attention(Tensor q, Tensor output, ReadOnlySpan<AttentionSegment> segments, int heads, int headDim)
    { long t = Stopwatch.GetTimestamp(); inner.Attention(q, output, segments, heads, headDim); Add("attention", t); }

    public void SwiGlu(Tensor gate, Tensor up, long length)
    { long t = Stopwatch.GetTimestamp(); inner.SwiGlu(gate, up, length); Add("swiglu", t); }

    public void Add(Tensor x, Tensor y, long length)
    { long t = Stopwatch.GetTimestamp(); inner.Add(x, y, length); Add("add", t); }
}
