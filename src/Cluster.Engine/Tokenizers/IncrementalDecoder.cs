using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Streams text from token ids one at a time and emits only complete UTF-8 characters, so a
/// character split across byte-fallback tokens is never shown broken. The concatenation of every
/// <see cref="Push"/> and the final <see cref="Flush"/> equals <see cref="ITokenizer.Decode"/> of all ids.
/// </summary>
public sealed class IncrementalDecoder(ITokenizer tokenizer)
{
    private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly char[] _chars = new char[256];
    private int _previous = -1;

    /// <summary>Adds one token and returns the text that became complete (possibly empty).</summary>
    public string Push(int id)
    {
        var bytes = tokenizer.TokenBytes(_previous, id);
        _previous = id;
        return Convert(bytes, flush: false);
    }

    /// <summary>Returns what is left at the end of the stream (an incomplete character becomes U+FFFD).</summary>
    public string Flush() => Convert([], flush: true);

    private string Convert(ReadOnlySpan<byte> bytes, bool flush)
    {
        // The usual case, a piece that fits the buffer at once, builds only its string.
        _utf8.Convert(bytes, _chars, flush, out var used, out var produced, out _);
        if (used == bytes.Length && produced < _chars.Length)
            return produced == 0 ? "" : new string(_chars, 0, produced);
        var sb = new StringBuilder();
        sb.Append(_chars, 0, produced);
        bytes = bytes[used..];
        while (bytes.Length > 0 || produced == _chars.Length)
        {
            // A full output buffer may hide more pending chars, so go round until it is not full.
            _utf8.Convert(bytes, _chars, flush, out used, out produced, out _);
            sb.Append(_chars, 0, produced);
            bytes = bytes[used..];
        }
        return sb.ToString();
    }
}
