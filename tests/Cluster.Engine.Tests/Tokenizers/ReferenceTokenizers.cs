using System.Text.Json;
using Cluster.Tests;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>Runs the independent reference programs under tests/reference/ on a batch of texts, one
/// process per batch, exchanging JSON through temp files (stdin/stdout would mangle control characters).</summary>
internal static class ReferenceTokenizers
{
    /// <summary>Ids from python3-sentencepiece (no BOS), or null when the module is missing outside CI.</summary>
    public static int[][]? SentencePiece(string modelPath, IReadOnlyList<string> texts) =>
        ExternalTools.EnsurePythonModule("sentencepiece")
            ? RunBatch(ExternalTools.Python, [Script("sentencepiece", "encode.py"), modelPath], texts)
            : null;

    /// <summary>Ids from a naive re-statement of llama2.c's encode() (BOS first).</summary>
    public static int[][] Llama2cNaive(string binPath, int vocabSize, IReadOnlyList<string> texts) =>
        RunBatch(ExternalTools.Python, [Script("llama2c", "encode.py"), binPath, vocabSize.ToString()], texts);

    public static string Script(params string[] parts) => Path.Combine([ExternalTools.RepoRoot, "tests", "reference", .. parts]);

    public static int[][] RunBatch(string program, IEnumerable<string> args, IReadOnlyList<string> texts, TimeSpan? timeout = null)
    {
        var input = Path.GetTempFileName();
        var output = Path.GetTempFileName();
        try
        {
            File.WriteAllText(input, JsonSerializer.Serialize(texts));
            var (code, stdout, stderr) = ExternalTools.Run(program, [.. args, input, output], timeout ?? TimeSpan.FromMinutes(5));
            if (code != 0) throw new InvalidOperationException($"{program} exited {code}: {stdout}\n{stderr}");
            return JsonSerializer.Deserialize<int[][]>(File.ReadAllText(output))!;
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }
}
