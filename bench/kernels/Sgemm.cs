using System.Runtime.InteropServices;

/// <summary>OpenBLAS's cblas_sgemm called directly, with its own threading (the engine's wrapper is
/// internal and sets OpenBLAS to one thread): the rate the engine's products are measured against.</summary>
internal static unsafe partial class Sgemm
{
    [LibraryImport("libopenblas.so.0", EntryPoint = "cblas_sgemm")]
    private static partial void Gemm(int order, int ta, int tb, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc);

    [LibraryImport("libopenblas.so.0", EntryPoint = "openblas_set_num_threads")]
    public static partial void SetThreads(int threads);

    /// <summary>y[m, n] = x[m, k] · w[n, k]^T, as the engine calls it (row-major, w transposed).</summary>
    public static void MatMulTransposed(float* x, float* w, float* y, int m, int k, int n) =>
        Gemm(101, 111, 112, m, n, k, 1f, x, k, w, k, 0f, y, n);
}
