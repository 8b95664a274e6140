using System.Text;
using Cluster.Engine.Tokenizers;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>Properties every tokenizer must have, checked on the same texts as the id comparisons.</summary>
internal static class TokenizerAssert
{
    /// <summary>decode(encode(x)) == x, and streaming the ids through <see cref="IncrementalDecoder"/> gives
    /// decode(all) with no U+FFFD.</summary>
    public static void RoundTripsAndStreams(ITokenizer tokenizer, string text, bool lossless = true)
    {
        var ids = tokenizer.Encode(text, addBos: true);
        var decoded = tokenizer.Decode(ids);
        if (lossless) Assert.True(text == decoded, $"round trip differs for: {Show(text)}\n got: {Show(decoded)}");
        var decoder = new IncrementalDecoder(tokenizer);
        var streamed = new StringBuilder();
        foreach (var id in ids)
        {
            var piece = decoder.Push(id);
            // Some corpus lines hold U+FFFD themselves (a damaged apostrophe in Moby Dick); elsewhere none may appear.
            Assert.False(piece.Contains('\uFFFD') && !text.Contains('\uFFFD'), $"U+FFFD streamed for {Show(text)} at id {id}");
            streamed.Append(piece);
        }
        streamed.Append(decoder.Flush());
        Assert.Equal(decoded, streamed.ToString());
    }

    /// <summary>Compares ids line by line and names the first difference with its text.</summary>
    public static void SameIds(IReadOnlyList<string> texts, int[][] expected, Func<string, int[]> encode, string what)
    {
        Assert.Equal(texts.Count, expected.Length);
        var failures = new List<string>();
        for (var i = 0; i < texts.Count; i++)
        {
            var actual = encode(texts[i]);
            if (!actual.AsSpan().SequenceEqual(expected[i]))
                failures.Add($"{what} #{i} {Show(texts[i])}\n expected [{string.Join(",", expected[i].Take(40))}]\n actual   [{string.Join(",", actual.Take(40))}]");
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {texts.Count} differ; first:\n{string.Join("\n", failures.Take(3))}");
    }

    public static string Show(string s) =>
        System.Text.Json.JsonSerializer.Serialize(s.Length > 100 ? s[..100] + "..." : s);

    /// <summary>Every line of a corpus file, split on '\n' only, so CR and other separators stay in the text.</summary>
    public static string[] Lines(string path) => File.ReadAllText(path).Split('\n');
}
