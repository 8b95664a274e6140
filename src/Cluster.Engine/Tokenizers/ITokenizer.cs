namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Text to token ids and back, for one model's vocabulary. Implementations are immutable after
/// loading and safe to share between threads; per-stream state lives in <see cref="IncrementalDecoder"/>.
/// </summary>
public interface ITokenizer
{
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or -1 when the vocabulary has none.</summary>
    int BosId { get; }

    /// <summary>End-of-sequence id, or -1 when the vocabulary has none.</summary>
    int EosId { get; }

    /// <summary>Encodes <paramref name="text"/>; prepends BOS when <paramref name="addBos"/> and the vocabulary has one.</summary>
    int[] Encode(string text, bool addBos);

    /// <summary>The raw bytes that token <paramref name="id"/> stands for when it follows <paramref name="previousId"/>
    /// (-1 at the start of a sequence); special tokens such as BOS/EOS give no bytes.</summary>
    ReadOnlySpan<byte> TokenBytes(int previousId, int id);

    /// <summary>Decodes a whole sequence; invalid UTF-8 becomes U+FFFD.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>The vocabulary's own string for <paramref name="id"/> (e.g. "▁Hello", "&lt;0x0A&gt;", "Ġworld"), for display.</summary>
    string TokenText(int id);

    /// <summary>The Jinja chat template that came with the vocabulary (tokenizer_config.json's chat_template,
    /// GGUF's tokenizer.chat_template), or null.</summary>
    string? ChatTemplate => null;
}
