namespace Cluster.Engine.Kernels;

/// <summary>
/// Splits the output rows of a matrix product (the weight rows) across the backend's threads, through
/// .NET's pool (the decode-sized products of every format and attention go through the backend's
/// <see cref="WorkerTeam"/> instead, which allocates nothing per call; this is their fall-back and the
/// path of prefill-sized products of stored formats). OpenBLAS runs single-threaded inside each part: two thread pools on the same cores (OpenBLAS's pthreads spin-wait after each
/// call) were what held fp32 prefill well below sgemm's rate, the attention and elementwise steps
/// between products competing with spinning BLAS threads.
/// </summary>
internal static class RowSplit
{
    /// <summary>Runs <paramref name="body"/>(first, end) over <paramref name="parts"/> contiguous
    /// ranges of [0, n), range starts a multiple of <paramref name="align"/>; inline when one part.</summary>
    public static void For(int n, int parts, int align, int threads, Action<int, int> body)
    {
        parts = Math.Max(1, Math.Min(parts, (n + align - 1) / align));
        if (parts == 1)
        {
            body(0, n);
            return;
        }
        int units = (n + align - 1) / align;
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads }, p =>
        {
            int u0 = (int)((long)units * p / parts), u1 = (int)((long)units * (p + 1) / parts);
            int first = u0 * align, end = Math.Min(n, u1 * align);
            if (first < end) body(first, end);
        });
    }
}
