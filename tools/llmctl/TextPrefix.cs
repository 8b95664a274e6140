using Cluster.Engine.Tokenizers;

namespace LlmCtl;

internal static class TextPrefix
{
    /// <summary>
    /// The first <paramref name="count"/> tokens of <paramref name="text"/> (with BOS), encoding only
    /// a prefix of the text: the prefix doubles until its encoding has a margin of tokens past the
    /// ones kept, so a merge across the cut cannot change them.
    /// </summary>
    public static int[] EncodeFirstTokens(ITokenizer tokenizer, string text, int count, int margin = 64)
    {
        for (int chars = Math.Max(1024, count * 8); ; chars *= 2)
        {
            bool whole = chars >= text.Length;
            var ids = tokenizer.Encode(whole ? text : text[..chars], addBos: true);
            if (whole || ids.Length >= count + margin) return ids[..Math.Min(count, ids.Length)];
        }
    }
}
