using System.Globalization;
using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>Which split regex a byte-level pre-tokenizer applies before BPE.</summary>
public enum ByteLevelSplit
{
    /// <summary>GPT-2 (also HF ByteLevel's use_regex default): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</summary>
    Gpt2,
    /// <summary>Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</summary>
    Llama3,
    /// <summary>Qwen2: as Llama 3 with \p{N} one digit at a time.</summary>
    Qwen2,
    /// <summary>No split (the whole segment is one word).</summary>
    None,
}

/// <summary>
/// GPT-2's byte-level BPE helpers (openai/gpt-2 encoder.py, HF tokenizers pre_tokenizers/byte_level.rs):
/// every byte maps to a printable character so that BPE runs on text, and the split regexes are
/// matched by hand here, on whole code points, because .NET's regex sees UTF-16 code units and would
/// class an astral letter such as U+1D518 as two non-letters.
/// </summary>
public static class ByteLevel
{
    /// <summary>bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes take
    /// U+0100 upwards in byte order.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    private static readonly Dictionary<char, byte> CharToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    /// <summary>The byte-level form of <paramref name="text"/>: one char per UTF-8 byte.</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text)];
        Encoding.UTF8.GetBytes(text, bytes);
        return string.Create(bytes.Length, bytes, static (dst, src) =>
        {
            for (var i = 0; i < src.Length; i++) dst[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>The bytes a byte-level token stands for; HF's ByteLevel decoder keeps a token with any
    /// unmapped char (an added token's plain text) as its UTF-8 instead.</summary>
    public static byte[] Decode(string token)
    {
        var bytes = new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i])) return Encoding.UTF8.GetBytes(token);
        }
        return bytes;
    }

    /// <summary>Splits <paramref name="text"/> into the words that <paramref name="split"/>'s regex matches,
    /// as (start, length) in chars. The alternatives are tried in order at each position, as a regex engine does.</summary>
    public static void Split(ReadOnlySpan<char> text, ByteLevelSplit split, List<(int Start, int Length)> words)
    {
        if (split == ByteLevelSplit.None)
        {
            if (text.Length > 0) words.Add((0, text.Length));
            return;
        }
        for (var i = 0; i < text.Length;)
        {
            var end = split == ByteLevelSplit.Gpt2 ? MatchGpt2(text, i) : MatchLlama3(text, i, split == ByteLevelSplit.Qwen2 ? 1 : 3);
            words.Add((i, end - i));
            i = end;
        }
    }

    private static int MatchGpt2(ReadOnlySpan<char> s, int i)
    {
        int end;
        if ((end = Contraction(s, i, ignoreCase: false)) > i) return end;
        var j = s[i] == ' ' ? i + 1 : i;
        if ((end = Run(s, j, Class.Letter)) > j) return end;
        if ((end = Run(s, j, Class.Number)) > j) return end;
        if ((end = Run(s, j, Class.Other)) > j) return end;
        return Whitespace(s, i);
    }

    private static int MatchLlama3(ReadOnlySpan<char> s, int i, int maxDigits)
    {
        int end;
        if ((end = Contraction(s, i, ignoreCase: true)) > i) return end;
        // [^\r\n\p{L}\p{N}]?\p{L}+
        var c = ClassAt(s, i, out var width);
        if (c == Class.Letter) return Run(s, i, Class.Letter);
        if (s[i] is not '\r' and not '\n' && c != Class.Number && (end = Run(s, i + width, Class.Letter)) > i + width) return end;
        // \p{N}{1,n}
        if (c == Class.Number)
        {
            end = i;
            for (var n = 0; n < maxDigits && end < s.Length && ClassAt(s, end, out width) == Class.Number; n++) end += width;
            return end;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        var j = s[i] == ' ' ? i + 1 : i;
        if ((end = Run(s, j, Class.Other)) > j)
        {
            while (end < s.Length && s[end] is '\r' or '\n') end++;
            return end;
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last newline
        var runEnd = Run(s, i, Class.Space);
        for (var k = runEnd - 1; k >= i; k--)
            if (s[k] is '\r' or '\n') return k + 1;
        return Whitespace(s, i);
    }

    /// <summary>\s+(?!\S)|\s+ : a whitespace run, less its last char when a non-space follows and the run
    /// has more than one (so " word" keeps its space); any run otherwise.</summary>
    private static int Whitespace(ReadOnlySpan<char> s, int i)
    {
        var end = Run(s, i, Class.Space);
        if (end == i) return i + 1; // not reached: callers come here only at whitespace
        return end < s.Length && end - i > 1 ? end - 1 : end;
    }

    private static int Contraction(ReadOnlySpan<char> s, int i, bool ignoreCase)
    {
        if (s[i] != '\'' || i + 1 >= s.Length) return i;
        var rest = s[(i + 1)..];
        var comparison = ignoreCase ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        foreach (var suffix in (ReadOnlySpan<string>)["s", "t", "re", "ve", "m", "ll", "d"])
            if (rest.StartsWith(suffix, comparison)) return i + 1 + suffix.Length;
        return i;
    }

    private enum Class { Letter, Number, Space, Other }

    private static int Run(ReadOnlySpan<char> s, int i, Class wanted)
    {
        while (i < s.Length && ClassAt(s, i, out var width) == wanted) i += width;
        return i;
    }

    private static Class ClassAt(ReadOnlySpan<char> s, int i, out int width)
    {
        if (Rune.DecodeFromUtf16(s[i..], out var rune, out width) != System.Buffers.OperationStatus.Done) return Class.Other;
        if (Rune.IsWhiteSpace(rune)) return Class.Space;
        return Rune.GetUnicodeCategory(rune) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Class.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Class.Number,
            _ => Class.Other,
        };
    }
}
