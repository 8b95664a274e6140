using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace LlmCtl;

/// <summary>Memory read bandwidth: the best of several passes of a SIMD sum over a buffer far larger
/// than the caches, split across <c>threads</c> threads (as the decode step's matrix products are).</summary>
internal static unsafe class MemoryBandwidth
{
    public static double MeasureBytesPerSecond(int threads, long bytes = 1L << 30, int passes = 5)
    {
        long n = bytes / sizeof(float);
        var p = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        try
        {
            new Span<float>(p, 1 << 20).Fill(1f);
            for (long i = 0; i < n; i += 1 << 20) new Span<float>(p + i, (int)Math.Min(1 << 20, n - i)).Fill(1f);
            double best = 0;
            long perThread = n / threads;
            for (int pass = 0; pass < passes; pass++)
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
                {
                    float sum = 0;
                    for (long i = t * perThread; i < (t + 1) * perThread; i += 1 << 20)
                        sum += TensorPrimitives.Sum(new ReadOnlySpan<float>(p + i, (int)Math.Min(1 << 20, (t + 1) * perThread - i)));
                    GC.KeepAlive(sum);
                })).ToList();
                workers.ForEach(w => w.Start());
                workers.ForEach(w => w.Join());
                best = Math.Max(best, perThread * threads * sizeof(float) / sw.Elapsed.TotalSeconds);
            }
            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(p);
        }
    }
}
