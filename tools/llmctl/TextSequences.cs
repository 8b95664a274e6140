using Cluster.Engine.Tokenizers;

namespace LlmCtl;

internal static class TextSequences
{
    /// <summary>
    /// <paramref name="count"/> sequences of <paramref name="length"/> tokens from <paramref name="text"/>,
    /// each BOS then consecutive text tokens, starting <paramref name="offset"/> tokens into the text (so
    /// calibration and evaluation can use different parts of one file).
    /// </summary>
    public static List<int[]> Take(ITokenizer tokenizer, string text, int offset, int count, int length)
    {
        if (count < 1 || length < 2) throw new ArgumentException($"need at least one sequence of at least 2 tokens, got {count} x {length}");
        if (offset < 0) throw new ArgumentException($"--offset-tokens must be >= 0, got {offset}");
        int body = length - 1;
        var ids = TextPrefix.EncodeFirstTokens(tokenizer, text, 1 + offset + count * body);
        int available = (ids.Length - 1 - offset) / body;
        if (available < count)
            throw new ArgumentException($"the text holds {ids.Length - 1} tokens: room for {Math.Max(0, available)} sequences of {length} after an offset of {offset}, not {count}");
        var bos = ids[0];
        return Enumerable.Range(0, count).Select(i => (int[])[bos, .. ids.AsSpan(1 + offset + i * body, body)]).ToList();
    }
}
