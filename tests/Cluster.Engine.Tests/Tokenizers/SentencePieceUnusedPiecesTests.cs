using Cluster.Engine.Tokenizers;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Tokenizers;

/// <summary>
/// SentencePiece merges through UNUSED pieces and then splits them back (bpe_model.cc). Llama 2 has none, so
/// this writes a copy of its tokenizer.model with some common pieces re-typed UNUSED and compares with
/// python3-sentencepiece on that file.
/// </summary>
public sealed class SentencePieceUnusedPiecesTests : IDisposable
{
    private readonly string _model = Path.GetTempFileName();

    public void Dispose() => File.Delete(_model);

    [SharedDataFact]
    public void Unused_pieces_are_resegmented_as_sentencepiece_does()
    {
        var source = File.ReadAllBytes(SharedData.Path_("models", "llama2-tokenizer", "tokenizer.model"));
        File.WriteAllBytes(_model, MarkUnused(source, id => id >= 300 && id < 29000 && id % 7 == 0));
        var tok = SentencePieceModelFile.Load(_model);
        Assert.Equal(PieceKind.Unused, tok.Vocab.Kinds[301]);
        var texts = StressTexts.All().Concat(TokenizerAssert.Lines(SharedData.Path_("corpus", "wikitext2_raw_test.txt")).Take(2000)).ToArray();
        var expected = ReferenceTokenizers.SentencePiece(_model, texts);
        if (expected is null) return;
        TokenizerAssert.SameIds(texts, expected, t => tok.Encode(t, addBos: false), "unused");
        Assert.DoesNotContain(texts.SelectMany(t => tok.Encode(t, false)), id => tok.Vocab.Kinds[id] == PieceKind.Unused);
    }

    /// <summary>Rewrites ModelProto field 1 (repeated SentencePiece {1 piece, 2 score, 3 type}) with type 5 (UNUSED)
    /// for the chosen normal pieces; every other field is copied as it is.</summary>
    private static byte[] MarkUnused(byte[] model, Func<int, bool> chosen)
    {
        var output = new MemoryStream();
        var pos = 0;
        var id = 0;
        while (pos < model.Length)
        {
            var tagStart = pos;
            var tag = ReadVarint(model, ref pos);
            if ((tag & 7) != 2) throw new InvalidDataException("ModelProto's top-level fields are all messages");
            var length = (int)ReadVarint(model, ref pos);
            var body = model.AsSpan(pos, length);
            pos += length;
            if (tag >> 3 != 1 || !chosen(id++))
            {
                output.Write(model.AsSpan(tagStart, pos - tagStart));
                continue;
            }
            // Copy the piece's fields except its type, then append type = UNUSED (a normal piece has none: NORMAL is the default).
            var piece = new MemoryStream();
            var p = 0;
            while (p < body.Length)
            {
                var fieldStart = p;
                var fieldTag = ReadVarint(body, ref p);
                switch (fieldTag & 7)
                {
                    case 0: ReadVarint(body, ref p); break;
                    case 2:
                        var skip = (int)ReadVarint(body, ref p); // read before adding: `p +=` would add to the old p
                        p += skip;
                        break;
                    case 5: p += 4; break;
                }
                if (fieldTag >> 3 != 3) piece.Write(body[fieldStart..p]);
            }
            piece.Write([3 << 3, 5]);
            output.Write([1 << 3 | 2]);
            WriteVarint(output, (ulong)piece.Length);
            piece.WriteTo(output);
        }
        return output.ToArray();
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int pos)
    {
        ulong value = 0;
        for (var shift = 0; ; shift += 7)
        {
            var b = data[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
    }

    private static void WriteVarint(Stream s, ulong value)
    {
        for (; value >= 0x80; value >>= 7) s.WriteByte((byte)(value | 0x80));
        s.WriteByte((byte)value);
    }
}
