namespace Cluster.Engine.Tokenizers;

/// <summary>Piece types, numbered as SentencePiece's ModelProto.SentencePiece.Type (sentencepiece_model.proto);
/// GGUF's tokenizer.ggml.token_type uses the same numbers.</summary>
public enum PieceKind : byte
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>A scored vocabulary as SentencePiece BPE, GGUF "llama" and llama2.c store it: piece i has text,
/// score and kind. Piece text uses <see cref="SentencePieceOptions.SpaceSymbol"/> for spaces.</summary>
public sealed record SentencePieceVocab(string[] Pieces, float[] Scores, PieceKind[] Kinds, int BosId, int EosId, int UnkId)
{
    public int Count => Pieces.Length;

    /// <summary>Kind of a piece from its text alone, for formats that store no types (llama2.c):
    /// "&lt;0xXX&gt;" is a byte, the BOS/EOS/UNK ids are control/unknown.</summary>
    public static PieceKind GuessKind(string piece, int id, int bos, int eos, int unk) =>
        id == unk ? PieceKind.Unknown
        : id == bos || id == eos ? PieceKind.Control
        : TryParseByte(piece, out _) ? PieceKind.Byte
        : PieceKind.Normal;

    /// <summary>Parses SentencePiece's byte-fallback piece names "&lt;0x00&gt;".."&lt;0xFF&gt;".</summary>
    public static bool TryParseByte(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

/// <summary>How text becomes the symbols that BPE starts from, after SentencePiece's NormalizerSpec
/// (sentencepiece_model.proto): add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces.</summary>
public sealed record SentencePieceOptions
{
    /// <summary>What a space is in piece text: U+2581 "▁" for SentencePiece, ' ' for llama2.c's tokenizer.bin.</summary>
    public char SpaceSymbol { get; init; } = '\u2581';

    /// <summary>Prepend one space to non-empty text, so a word at the start is tokenized as mid-text.</summary>
    public bool AddDummyPrefix { get; init; } = true;

    /// <summary>Drop leading and trailing spaces and collapse runs of spaces into one.</summary>
    public bool RemoveExtraWhitespaces { get; init; }

    /// <summary>Emit the UTF-8 bytes of an unknown character as &lt;0xXX&gt; pieces instead of UNK.</summary>
    public bool ByteFallback { get; init; } = true;

    /// <summary>Merge into any piece (llama2.c, llama.cpp) rather than only normal, user-defined and unused
    /// pieces, re-splitting the unused ones afterwards (SentencePiece's bpe_model.cc).</summary>
    public bool MergeIntoAnyPiece { get; init; }
}
