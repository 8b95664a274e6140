using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// P/Invoke to cuBLAS's GemmEx (bf16 or fp32 in, fp32 accumulate and out), bound at run time like
/// <see cref="OpenBlas"/>: a GPU machine with PyTorch has libcublas.so.* under its Python
/// environment's nvidia/cublas/lib, and no CUDA toolkit. The handle works on the CUDA context that is
/// current on the calling thread (ILGPU's, bound by the backend) and on the stream it is given.
/// </summary>
internal sealed unsafe class Cublas : IDisposable
{
    // cublas_api.h / library_types.h values.
    private const int OpN = 0, OpT = 1;
    private const int RealF32 = 0, RealBf16 = 14;
    private const int ComputeF32 = 68;        // CUBLAS_COMPUTE_32F: no TF32, exact fp32 products
    private const int ComputeF32FastTf32 = 77; // CUBLAS_COMPUTE_32F_FAST_TF32: tensor cores, 10-bit mantissa inputs
    private const int GemmDefault = -1;       // CUBLAS_GEMM_DEFAULT

    private readonly delegate* unmanaged<nint, void> _destroy;
    private readonly delegate* unmanaged<nint, int, int, int, int, int, void*, nint, int, int, nint, int, int, void*, nint, int, int, int, int, int> _gemmEx;
    private readonly delegate* unmanaged<nint, int, int, int, int, int, void*, nint, int, int, long, nint, int, int, long, void*, nint, int, int, long, int, int, int, int> _gemmBatched;
    private readonly delegate* unmanaged<nint, nint, nuint, int> _setWorkspace;
    private nint _handle;

    private Cublas(nint library, nint handle)
    {
        _gemmBatched = (delegate* unmanaged<nint, int, int, int, int, int, void*, nint, int, int, long, nint, int, int, long, void*, nint, int, int, long, int, int, int, int>)
            NativeLibrary.GetExport(library, "cublasGemmStridedBatchedEx");
        _handle = handle;
        _setWorkspace = NativeLibrary.TryGetExport(library, "cublasSetWorkspace_v2", out var setWorkspace)
            ? (delegate* unmanaged<nint, nint, nuint, int>)setWorkspace : null;
        _destroy = (delegate* unmanaged<nint, void>)NativeLibrary.GetExport(library, "cublasDestroy_v2");
        _gemmEx = (delegate* unmanaged<nint, int, int, int, int, int, void*, nint, int, int, nint, int, int, void*, nint, int, int, int, int, int>)
            NativeLibrary.GetExport(library, "cublasGemmEx");
    }

    /// <summary>The library path that was loaded.</summary>
    public string LibraryPath { get; private init; } = "";

    /// <summary>
    /// Loads libcublas and creates a handle bound to <paramref name="stream"/> (a CUstream; 0 for the
    /// default stream). Returns null with the reason when the library is missing or cublasCreate fails
    /// (no CUDA device, or no current context): callers fall back to ILGPU's GEMM.
    /// </summary>
    /// <param name="setting">Library file or folder, overriding LLMCLUSTER_CUBLAS (tests); null reads it.</param>
    public static Cublas? TryCreate(nint stream, out string reason, string? setting = null)
    {
        var library = CublasLibrary.TryLoad(out var path, out reason, setting);
        if (library == 0) return null;
        if (!NativeLibrary.TryGetExport(library, "cublasCreate_v2", out var createPtr)
            || !NativeLibrary.TryGetExport(library, "cublasSetStream_v2", out var setStreamPtr))
        {
            reason = $"{path} has no cublasCreate_v2/cublasSetStream_v2";
            return null;
        }
        nint handle;
        int status = ((delegate* unmanaged<nint*, int>)createPtr)(&handle);
        if (status != 0)
        {
            reason = $"cublasCreate failed with {StatusName(status)} ({path}): no CUDA device or no current context";
            return null;
        }
        status = ((delegate* unmanaged<nint, nint, int>)setStreamPtr)(handle, stream);
        var blas = new Cublas(library, handle) { LibraryPath = path! };
        if (status != 0)
        {
            blas.Dispose();
            reason = $"cublasSetStream failed with {StatusName(status)}";
            return null;
        }
        reason = "";
        return blas;
    }

    /// <summary>y[m, n] = x[m, k] · w[n, k]^T, all row-major device pointers; x and w bf16 when
    /// <paramref name="bf16"/> (else fp32), y fp32. Row-major y^T is column-major [n, m]: it is
    /// w (column-major [k, n]) transposed times x (column-major [k, m]).</summary>
    public void MatMulTransposed(nint x, nint w, nint y, int m, int k, int n, bool bf16)
    {
        float alpha = 1f, beta = 0f;
        int type = bf16 ? RealBf16 : RealF32;
        int status = _gemmEx(_handle, OpT, OpN, n, m, k, &alpha, w, type, k, x, type, k, &beta, y, RealF32, n, ComputeF32, GemmDefault);
        if (status != 0) throw new InvalidOperationException($"cublasGemmEx({m}x{k} by {n}x{k}) failed with {StatusName(status)}");
    }

    /// <summary>
    /// fp32 strided-batched product in cuBLAS's own column-major terms: for i &lt; batch,
    /// C_i[m, n] = op(A_i)[m, k] · op(B_i)[k, n], X_i = X + i * strideX (elements; 0 = shared).
    /// Attention uses it per KV-head group: scores = K·q and output = V·p in column-major views.
    /// C is scaled by <paramref name="alpha"/>; <paramref name="tf32"/> lets cuBLAS round the inputs
    /// to TF32 for the tensor cores (accumulation stays fp32).
    /// </summary>
    public void GemmStridedBatched(bool transA, bool transB, int m, int n, int k,
        nint a, int lda, long strideA, nint b, int ldb, long strideB, nint c, int ldc, long strideC, int batch, float alpha = 1f, bool tf32 = false)
    {
        float beta = 0f;
        int status = _gemmBatched(_handle, transA ? OpT : OpN, transB ? OpT : OpN, m, n, k, &alpha, a, RealF32, lda, strideA,
            b, RealF32, ldb, strideB, &beta, c, RealF32, ldc, strideC, batch, tf32 ? ComputeF32FastTf32 : ComputeF32, GemmDefault);
        if (status != 0) throw new InvalidOperationException($"cublasGemmStridedBatchedEx({m}x{n}x{k}, batch {batch}) failed with {StatusName(status)}");
    }

    /// <summary>Gives cuBLAS a workspace of its own (device memory the caller keeps alive): without one,
    /// a handle on a user stream may not use the split-K and stream-K kernels that mid-sized products
    /// need (PyTorch gives Hopper 32 MiB). False when the library has no cublasSetWorkspace.</summary>
    public bool SetWorkspace(nint workspace, long bytes)
    {
        if (_setWorkspace == null) return false;
        int status = _setWorkspace(_handle, workspace, (nuint)bytes);
        if (status != 0) throw new InvalidOperationException($"cublasSetWorkspace({bytes} bytes) failed with {StatusName(status)}");
        return true;
    }

    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS",
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        _ => $"cuBLAS status {status}",
    };

    public void Dispose()
    {
        if (_handle != 0) _destroy(_handle);
        _handle = 0;
    }
}
