using System.Text;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>Texts that break tokenizers: 4-byte characters, CJK, combining marks, RTL, control characters,
/// whitespace runs, the empty string and a 100 KB single line. Every reference comparison runs them.</summary>
public static class StressTexts
{
    public static readonly string[] Short =
    [
        "",
        " ",
        "  ",
        "\n",
        "Hello world",
        " Hello world",
        "Hello  world  ",
        "Once upon a time, there was a little girl named Lily.",
        "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝐀𝐁𝐂 and 𐍈 gothic, 𠜎𠜱 CJK ext B",
        "中文分词测试：我们今天去公园。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
        "combining: e\u0301 a\u0308 o\u0302\u0323 Z\u0335\u0321\u031b; precomposed é ä",
        "RTL: שלום עולם and مرحبا بالعالم with ‏marks‎ inside",
        "controls: \u0001\u0002\u0007\b\u000b\f\u001b[0m\u007f\u0085\u200b\u200d\u2028\u2029 end",
        "tabs\tand\t\ttabs\t\t\t",
        "runs of spaces:      five,          ten, then newlines\n\n\n\nand CRLF\r\n\r\nend",
        "    leading and trailing    ",
        "\n\n\nleading newlines",
        "numbers 1234567890 3.14159 1,000,000 0x7fff -42",
        "code: for (int i = 0; i < n; i++) { x += a[i] * b[i]; } // comment",
        "<s> </s> <unk> <|endoftext|> [PAD] <0x41> look like specials",
        "URL https://example.com/path?q=1&r=2#frag and e-mail a.b@c.org",
        "mixed: Ünïcödé ÀÉÎÕÜ ßẞ ﬁ ligature Ǆ ǅ ǆ and ½ ² ™ ©",
        "\u00a0non-breaking\u00a0space and\u2009thin\u2003em spaces",
        "ɪᴘᴀ ʃ ʒ θ ð ŋ ə ɛ",
        "a",
        "😀",
        "'s 're 've 'm 'll 'd it's I'm we'll they'd",
    ];

    /// <summary>A 100 KB single line with no newline (mixed words, punctuation and some multibyte text).</summary>
    public static string LongLine()
    {
        var sb = new StringBuilder(110_000);
        var words = new[] { "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog,", "Moby-Dick;", "naïve", "中文", "😀", "x" };
        for (var i = 0; sb.Length < 100_000; i++) sb.Append(words[i * 7 % words.Length]).Append(i % 11 == 0 ? "  " : " ");
        return sb.ToString();
    }

    /// <summary>100 KB of one character class with no spaces at all: the worst case for a merge loop.</summary>
    public static string LongWord() => new('a', 100_000);

    public static IReadOnlyList<string> All() => [.. Short, LongLine(), LongWord()];
}
