using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Reads llama2.c's tokenizer.bin (export in its tokenizer.py): int32 max_token_length, then per token
/// {float32 score, int32 length, UTF-8 bytes}, little-endian; SentencePiece's "▁" is stored as ' '.
/// The file does not say how many tokens it holds, so the model's vocab_size is passed in.
/// Encoding follows run.c's encode(): dummy " " prefix, per-character lookup with byte fallback
/// (id = byte + 3, the "&lt;0xXX&gt;" pieces), then best-score merges into any piece of the vocabulary.
/// </summary>
public static class Llama2cTokenizer
{
    /// <summary>llama2.c fixes these ids: 0 &lt;unk&gt;, 1 BOS, 2 EOS.</summary>
    public const int UnkId = 0, BosId = 1, EosId = 2;

    /// <summary>How many token records the file holds (for a tokenizer.bin found without its model).</summary>
    public static int CountTokens(string path)
    {
        using var reader = new BinaryReader(File.OpenRead(path));
        var stream = reader.BaseStream;
        stream.Position = 4;
        var count = 0;
        while (stream.Position + 8 <= stream.Length)
        {
            reader.ReadSingle(); // score
            var length = reader.ReadInt32();
            if (length < 0) throw new InvalidDataException($"{path}: token {count} has length {length}");
            stream.Position += length;
            count++;
        }
        return count;
    }

    /// <exception cref="InvalidDataException">The file ends before <paramref name="vocabSize"/> tokens.</exception>
    public static SentencePieceBpeTokenizer Load(string path, int vocabSize)
    {
        using var reader = new BinaryReader(File.OpenRead(path));
        var pieces = new string[vocabSize];
        var scores = new float[vocabSize];
        var kinds = new PieceKind[vocabSize];
        try
        {
            reader.ReadInt32(); // max_token_length: only run.c's buffer sizing needs it
            for (var id = 0; id < vocabSize; id++)
            {
                scores[id] = reader.ReadSingle();
                var length = reader.ReadInt32();
                if (length < 0 || length > 1 << 16) throw new InvalidDataException($"{path}: token {id} has length {length}");
                pieces[id] = Encoding.UTF8.GetString(reader.ReadBytes(length));
                kinds[id] = SentencePieceVocab.GuessKind(pieces[id], id, BosId, EosId, UnkId);
            }
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: ends before {vocabSize} tokens (is vocab_size right?)");
        }
        var vocab = new SentencePieceVocab(pieces, scores, kinds, BosId, EosId, UnkId);
        return new SentencePieceBpeTokenizer(vocab, new SentencePieceOptions { SpaceSymbol = ' ', MergeIntoAnyPiece = true });
    }
}
