using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>Decoding shared by every tokenizer: the bytes of each token in context, then UTF-8.</summary>
internal static class TokenizerText
{
    private static readonly UTF8Encoding Utf8 = new(false, false);

    /// <summary>Concatenates <see cref="ITokenizer.TokenBytes"/> of each id and decodes the whole as UTF-8,
    /// so that a character split across byte tokens comes out whole (and invalid bytes as U+FFFD).</summary>
    public static string Decode(ITokenizer tokenizer, IEnumerable<int> ids)
    {
        var buffer = new List<byte>(256);
        var previous = -1;
        foreach (var id in ids)
        {
            foreach (var b in tokenizer.TokenBytes(previous, id)) buffer.Add(b);
            previous = id;
        }
        return Utf8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(buffer));
    }
}
