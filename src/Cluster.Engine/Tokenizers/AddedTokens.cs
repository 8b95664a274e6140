namespace Cluster.Engine.Tokenizers;

/// <summary>One entry of tokenizer.json's "added_tokens" (HF tokenizers AddedToken): matched in the raw
/// text before the model runs. <see cref="Special"/> tokens decode to nothing.</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord = false, bool LStrip = false, bool RStrip = false);

/// <summary>
/// Splits text on added tokens, leftmost-longest as HF tokenizers' AddedVocabulary does (its Aho-Corasick
/// matcher uses MatchKind::LeftmostLongest): lstrip/rstrip tokens also take the whitespace beside them,
/// single_word tokens match only between non-word characters.
/// </summary>
public sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;

    public AddedTokenMatcher(IEnumerable<AddedToken> tokens)
    {
        _byFirstChar = tokens.Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>Segments of <paramref name="text"/> in order: (start, length, added token id or -1 for plain text).
    /// Plain segments are never empty.</summary>
    public List<(int Start, int Length, int Id)> Split(string text)
    {
        var segments = new List<(int, int, int)>();
        var plainStart = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (!_byFirstChar.TryGetValue(text[i], out var candidates)) continue;
            AddedToken? match = null;
            foreach (var t in candidates)
            {
                if (string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) == 0 && (!t.SingleWord || IsWordBoundary(text, i, t.Content.Length)))
                {
                    match = t;
                    break;
                }
            }
            if (match is null) continue;
            var start = i;
            var end = i + match.Content.Length;
            if (match.LStrip) while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (match.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > plainStart) segments.Add((plainStart, start - plainStart, -1));
            segments.Add((start, end - start, match.Id));
            plainStart = end;
            i = end - 1;
        }
        if (plainStart < text.Length) segments.Add((plainStart, text.Length - plainStart, -1));
        return segments;
    }

    private static bool IsWordBoundary(string text, int start, int length) =>
        (start == 0 || !IsWordChar(text[start - 1])) && (start + length >= text.Length || !IsWordChar(text[start + length]));

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
}
