using System.Runtime.InteropServices;

namespace Cluster.Engine.Kernels.Ilgpu;

/// <summary>
/// Finds libcublas at run time: <c>LLMCLUSTER_CUBLAS</c> (a file or a folder), then the Python
/// environments' <c>nvidia/cublas/lib</c> (PyTorch's CUDA wheels), then a CUDA toolkit and the system
/// loader path. Newest soname first (libcublas.so.13 before .12).
/// </summary>
internal static class CublasLibrary
{
    public const string EnvironmentVariable = "LLMCLUSTER_CUBLAS";

    private static readonly string[] Sonames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"];

    /// <summary>Loads the first candidate that opens; 0 and a reason that lists what was tried otherwise.</summary>
    /// <param name="setting">Overrides the environment variable (tests); null reads it.</param>
    public static nint TryLoad(out string? path, out string reason, string? setting = null)
    {
        var tried = new List<string>();
        foreach (var candidate in Candidates(setting))
        {
            tried.Add(candidate);
            // cuBLAS needs libcublasLt from its own folder; the wheels' RPATH ($ORIGIN) finds it, but a
            // copied library may not, so load it first when it is there.
            var dir = Path.GetDirectoryName(candidate);
            if (!string.IsNullOrEmpty(dir))
                foreach (var lt in Directory.Exists(dir) ? Directory.GetFiles(dir, "libcublasLt.so*") : [])
                    if (NativeLibrary.TryLoad(lt, out _)) break;
            if (NativeLibrary.TryLoad(candidate, out var handle))
            {
                path = candidate;
                reason = "";
                return handle;
            }
        }
        path = null;
        reason = $"libcublas not found (set {EnvironmentVariable}; tried {string.Join(", ", tried.Take(8))}{(tried.Count > 8 ? ", ..." : "")})";
        return 0;
    }

    /// <summary>Every path or soname worth trying, in order.</summary>
    public static IEnumerable<string> Candidates(string? setting = null)
    {
        var env = setting ?? Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrEmpty(env))
        {
            // An explicit setting is the only candidate: silently using another library would hide a typo.
            if (Directory.Exists(env)) foreach (var f in InFolder(env)) yield return f;
            else yield return env;
            yield break;
        }
        foreach (var folder in PythonFolders()) foreach (var f in InFolder(folder)) yield return f;
        foreach (var folder in new[] { "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib" })
            foreach (var f in InFolder(folder)) yield return f;
        foreach (var soname in Sonames) yield return soname; // the system loader path
    }

    private static IEnumerable<string> InFolder(string folder) =>
        Directory.Exists(folder) ? Sonames.Select(s => Path.Combine(folder, s)).Where(File.Exists) : [];

    /// <summary>nvidia/cublas/lib under the usual Python package roots (system, user, conda, venv).</summary>
    private static IEnumerable<string> PythonFolders()
    {
        var roots = new List<string> { "/usr/local/lib", "/usr/lib", "/opt/conda/lib" };
        var home = Environment.GetEnvironmentVariable("HOME");
        if (!string.IsNullOrEmpty(home)) roots.Add(Path.Combine(home, ".local", "lib"));
        foreach (var v in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (Environment.GetEnvironmentVariable(v) is { Length: > 0 } p) roots.Insert(0, Path.Combine(p, "lib"));
        foreach (var root in roots.Where(Directory.Exists))
        {
            string[] pythons;
            try { pythons = Directory.GetDirectories(root, "python3*"); }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            foreach (var py in pythons.OrderDescending())
                foreach (var sub in new[] { "site-packages", "dist-packages" })
                    // CUDA 12 wheels use nvidia/cublas/lib; CUDA 13 wheels may use nvidia/cu13/lib.
                    foreach (var lib in new[] { "cublas", "cu13", "cu12" })
                        yield return Path.Combine(py, sub, "nvidia", lib, "lib");
        }
    }
}
