using Cluster.Tests;

namespace Cluster.Grpc.Tests.Interop;

/// <summary>
/// Python stubs for protos/test/interop.proto and the standard grpc.health.v1 and
/// grpc.reflection.v1alpha protos, generated once per test run into a temp folder with apt's
/// grpc_tools (Grpc.Tools' protoc writes Python that Debian's protobuf cannot import). Each proto is
/// compiled from its own folder so the modules are top-level (health_pb2, not grpc/health/...: a
/// "grpc" package there would shadow grpcio).
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
        var protos = Path.Combine(ExternalTools.RepoRoot, "protos");
        foreach (var proto in new[] { "test/interop.proto", "grpc/health/v1/health.proto", "grpc/reflection/v1alpha/reflection.proto" })
        {
            var file = Path.Combine(protos, proto);
            var (code, stdout, stderr) = ExternalTools.Run(ExternalTools.Python,
                ["-m", "grpc_tools.protoc", "-I", Path.GetDirectoryName(file)!, "--python_out=" + dir, "--grpc_python_out=" + dir, file],
                TimeSpan.FromSeconds(60));
            if (code != 0) throw new InvalidOperationException($"grpc_tools.protoc failed on {proto}: {stdout}{stderr}");
        }
        return dir;
    }
}
