namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Picks the tokenizer format from a path: a model folder is searched for tokenizer.json, then
/// tokenizer.model, then tokenizer.bin, then vocab.json + merges.txt, then a *.gguf file (first in name
/// order); a file is read by its name (*.json, *.model, *.gguf, *.bin).
/// </summary>
public static class TokenizerLoader
{
    /// <param name="path">A tokenizer file or a model folder.</param>
    /// <param name="vocabSize">For llama2.c tokenizer.bin only (the file does not say); when null the records are counted to the end of the file.</param>
    /// <exception cref="FileNotFoundException">Nothing loadable at <paramref name="path"/>.</exception>
    public static ITokenizer Load(string path, int? vocabSize = null) => LoadFile(Resolve(path), vocabSize);

    /// <summary>The file <see cref="Load"/> would read for <paramref name="path"/> (vocab.json stands for the vocab.json + merges.txt pair).</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(path)) return path;
        if (!Directory.Exists(path)) throw new FileNotFoundException($"no tokenizer file or model folder at {path}", path);
        foreach (var name in (ReadOnlySpan<string>)["tokenizer.json", "tokenizer.model", "tokenizer.bin"])
        {
            var candidate = Path.Combine(path, name);
            if (File.Exists(candidate)) return candidate;
        }
        if (HfVocabMergesFiles.Present(path)) return Path.Combine(path, "vocab.json");
        return Directory.EnumerateFiles(path, "*.gguf").Order(StringComparer.Ordinal).FirstOrDefault()
            ?? throw new FileNotFoundException($"{path} holds no tokenizer.json, tokenizer.model, tokenizer.bin, vocab.json + merges.txt or *.gguf", path);
    }

    private static ITokenizer LoadFile(string file, int? vocabSize)
    {
        var name = Path.GetFileName(file);
        if (name == "vocab.json") return HfVocabMergesFiles.Load(Path.GetDirectoryName(Path.GetFullPath(file))!);
        if (name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return HfTokenizerJson.Load(file);
        if (name.EndsWith(".model", StringComparison.OrdinalIgnoreCase)) return SentencePieceModelFile.Load(file);
        if (name.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return GgufTokenizer.Load(file);
        if (name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cTokenizer.Load(file, vocabSize ?? Llama2cTokenizer.CountTokens(file));
        throw new NotSupportedException($"{file}: unknown tokenizer format (expected .json, .model, .gguf or llama2.c .bin)");
    }
}
