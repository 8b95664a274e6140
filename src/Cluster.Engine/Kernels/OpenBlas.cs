using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels;

/// <summary>
/// P/Invoke to OpenBLAS's CBLAS interface (Debian: libopenblas0-pthread, libopenblas.so.0).
/// Resolved at first use; <see cref="IsAvailable"/> is false when the library cannot be loaded.
/// </summary>
internal static unsafe class OpenBlas
{
    private const int RowMajor = 101, NoTrans = 111, Trans = 112;

    private static readonly nint Handle = Load();
    private static readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> Sgemm;
    private static readonly delegate* unmanaged<int, int, int, int, float, float*, int, float*, int, float, float*, int, void> Sgemv;
    private static readonly delegate* unmanaged<int, void> SetNumThreads;

    static OpenBlas()
    {
        if (Handle == 0) return;
        Sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)NativeLibrary.GetExport(Handle, "cblas_sgemm");
        Sgemv = (delegate* unmanaged<int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)NativeLibrary.GetExport(Handle, "cblas_sgemv");
        SetNumThreads = NativeLibrary.TryGetExport(Handle, "openblas_set_num_threads", out var f)
            ? (delegate* unmanaged<int, void>)f
            : null;
    }

    public static bool IsAvailable => Handle != 0;

    /// <summary>Why loading failed, for the one-time fallback message.</summary>
    public static string? LoadError { get; private set; }

    private static nint Load()
    {
        var candidates = new[] { Environment.GetEnvironmentVariable("LLMCLUSTER_OPENBLAS"), "libopenblas.so.0", "libopenblas.so", "libopenblas" };
        foreach (var name in candidates)
            if (!string.IsNullOrEmpty(name) && NativeLibrary.TryLoad(name, out var handle)) return handle;
        LoadError = "libopenblas.so.0 not found (apt install libopenblas0-pthread)";
        return 0;
    }

    /// <summary>OpenBLAS's own threads compete with .NET's pool on small machines: set them deliberately.</summary>
    public static void SetThreads(int threads)
    {
        if (SetNumThreads != null) SetNumThreads(threads);
    }

    /// <summary>y[m, n] = x[m, k] · w[n, k]^T; rows of y are <paramref name="ldc"/> apart (default n).</summary>
    public static void MatMulTransposed(float* x, float* w, float* y, int m, int k, int n, int ldc = 0) =>
        Sgemm(RowMajor, NoTrans, Trans, m, n, k, 1f, x, k, w, k, 0f, y, ldc > 0 ? ldc : n);

    /// <summary>y[n] = w[n, k] · x[k] (a one-row product: sgemv is ~3x faster than sgemm here).</summary>
    public static void MatVec(float* w, float* x, float* y, int n, int k) =>
        Sgemv(RowMajor, NoTrans, n, k, 1f, w, k, x, 1, 0f, y, 1);
}
