using System.Runtime.InteropServices;
using System.Text.Json;
using Cluster.Tests;

namespace Cluster.Engine.Tests.Model;

/// <summary>
/// Runs tests/reference/llama_ref.py, an independent float64 PyTorch implementation of the Llama
/// forward pass (apt python3-torch), on the same weight files the engine reads.
/// </summary>
internal static class PyTorchReference
{
    private static string Script => Path.Combine(ExternalTools.RepoRoot, "tests", "reference", "llama_ref.py");

    /// <summary>False (the test should return) when torch is missing outside CI.</summary>
    public static bool Available() => ExternalTools.EnsurePythonModule("torch");

    /// <summary>Logits [T, vocab] for <paramref name="ids"/> from position 0.</summary>
    public static float[] Logits(string model, IReadOnlyList<int> ids)
    {
        using var dir = new TempDir();
        var idsFile = dir.File("ids.txt");
        File.WriteAllText(idsFile, string.Join(' ', ids));
        var outFile = dir.File("logits.f32");
        Run(["logits", "--model", model, "--tokens-file", idsFile, "--out", outFile]);
        return MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(outFile)).ToArray();
    }

    /// <summary>StreamingLLM logits [T, vocab], one row per token fed one at a time (see llama_ref.py sink-window).</summary>
    public static float[] SinkWindowLogits(string model, IReadOnlyList<int> ids, int sinks, int window)
    {
        using var dir = new TempDir();
        var idsFile = dir.File("ids.txt");
        File.WriteAllText(idsFile, string.Join(' ', ids));
        var outFile = dir.File("logits.f32");
        Run(["sink-window", "--model", model, "--tokens-file", idsFile, "--sinks", sinks.ToString(), "--window", window.ToString(), "--out", outFile]);
        return MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(outFile)).ToArray();
    }

    /// <summary>The Q-Filter of one head's queries [rows, headDim] by numpy's SVD (llama_ref.py qfilter).</summary>
    public static float[] QFilter(float[] queries, int headDim)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("q.f32"), MemoryMarshal.AsBytes(queries.AsSpan()).ToArray());
        Run(["qfilter", "--queries", dir.File("q.f32"), "--head-dim", headDim.ToString(), "--out", dir.File("f.f32")]);
        return MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(dir.File("f.f32"))).ToArray();
    }

    public static (double Perplexity, double NllSum, int Scored) Perplexity(string model, IReadOnlyList<int> ids)
    {
        using var dir = new TempDir();
        var idsFile = dir.File("ids.txt");
        File.WriteAllText(idsFile, string.Join(' ', ids));
        using var doc = JsonDocument.Parse(Run(["perplexity", "--model", model, "--tokens-file", idsFile]));
        var r = doc.RootElement;
        return (r.GetProperty("perplexity").GetDouble(), r.GetProperty("nll_sum").GetDouble(), r.GetProperty("tokens_scored").GetInt32());
    }

    /// <summary>Writes a llama2.c version-1 ("ak42") copy of a legacy checkpoint with the reference writer.</summary>
    public static void WriteVersion1(string legacy, string output) =>
        ExternalTools.Run(ExternalTools.Python, [Path.Combine(ExternalTools.RepoRoot, "tests", "reference", "write_llama2c_v1.py"), legacy, output], TimeSpan.FromMinutes(2))
            .EnsureSuccess("write_llama2c_v1.py");

    private static string Run(string[] args) =>
        ExternalTools.Run(ExternalTools.Python, [Script, .. args], TimeSpan.FromMinutes(5)).EnsureSuccess("llama_ref.py");

    private static string EnsureSuccess(this (int ExitCode, string Stdout, string Stderr) r, string what) =>
        r.ExitCode == 0 ? r.Stdout : throw new InvalidOperationException($"{what} failed ({r.ExitCode}): {r.Stderr}");
}

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path_);

    public string Path_ { get; } = Path.Combine(Path.GetTempPath(), "llmcluster-test-" + Guid.NewGuid().ToString("N"));

    public string File(string name) => Path.Combine(Path_, name);

    public void Dispose()
    {
        try { Directory.Delete(Path_, recursive: true); } catch (IOException) { }
    }
}
