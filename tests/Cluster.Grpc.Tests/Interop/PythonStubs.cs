using Cluster.Tests;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>
/// Python stubs for protos/test/interop.proto, generated once per test run into a temp folder
/// with apt's grpc_tools (Grpc.Tools' protoc writes Python that Debian's protobuf cannot import).
/// </summary>
public static class PythonStubs
{
    private static readonly Lazy<string?> Dir = new(Generate);

    public static string ScriptsDir => Path.Combine(ExternalTools.RepoRoot, "tests", "interop", "python");

    /// <summary>The stubs folder, or null when grpcio is missing and the test should return (skip).</summary>
    public static string? Get() => Dir.Value;

    private static string? Generate()
    {
        if (!ExternalTools.EnsurePythonModule("grpc") || !ExternalTools.EnsurePythonModule("grpc_tools")) return null;
        var dir = Directory.CreateTempSubdirectory("interop-stubs-").FullName;
        var protoDir = Path.Combine(ExternalTools.RepoRoot, "protos", "test");
        var (code, stdout, stderr) = ExternalTools.Run(ExternalTools.Python,
            ["-m", "grpc_tools.protoc", "-I", protoDir, "--python_out=" + dir, "--grpc_python_out=" + dir, Path.Combine(protoDir, "interop.proto")],
            TimeSpan.FromSeconds(60));
        if (code != 0) throw new InvalidOperationException($"grpc_tools.protoc failed: {stdout}{stderr}");
        return dir;
    }
}
