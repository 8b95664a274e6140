using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Reads a SentencePiece tokenizer.model: a protobuf ModelProto (sentencepiece_model.proto), decoded
/// here with a minimal wire-format reader because only a handful of fields matter:
/// ModelProto { 1 repeated SentencePiece pieces; 2 TrainerSpec; 3 NormalizerSpec },
/// SentencePiece { 1 piece; 2 float score; 3 Type type = NORMAL },
/// TrainerSpec { 3 model_type (1 UNIGRAM, 2 BPE); 35 byte_fallback; 40 unk_id; 41 bos_id; 42 eos_id },
/// NormalizerSpec { 1 name; 2 precompiled_charsmap; 3 add_dummy_prefix = true; 4 remove_extra_whitespaces = true;
/// 5 escape_whitespaces = true }.
/// Not covered: Unigram models and character-map normalizers (nmt_nfkc).
/// </summary>
public static class SentencePieceModelFile
{
    private const int ModelTypeBpe = 2;

    /// <exception cref="InvalidDataException">The file is not a ModelProto.</exception>
    /// <exception cref="NotSupportedException">A Unigram model, or a normalizer with a character map (e.g. nmt_nfkc).</exception>
    public static SentencePieceBpeTokenizer Load(string path) => Parse(File.ReadAllBytes(path), path);

    public static SentencePieceBpeTokenizer Parse(ReadOnlySpan<byte> data, string name = "tokenizer.model")
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var kinds = new List<PieceKind>();
        int modelType = 1, unk = 0, bos = 1, eos = 2;
        bool byteFallback = false, addDummyPrefix = true, removeExtra = true, escape = true;
        var charsmapLength = 0;
        var normalizerName = "";

        var model = new ProtoReader(data, name);
        while (model.Next(out var field, out _))
        {
            switch (field)
            {
                case 1:
                    var piece = model.Message();
                    string text = "";
                    float score = 0;
                    var kind = PieceKind.Normal;
                    while (piece.Next(out var f, out _))
                    {
                        if (f == 1) text = piece.String();
                        else if (f == 2) score = piece.Float();
                        else if (f == 3) kind = (PieceKind)piece.Varint();
                        else piece.Skip();
                    }
                    pieces.Add(text);
                    scores.Add(score);
                    kinds.Add(kind);
                    break;
                case 2:
                    var trainer = model.Message();
                    while (trainer.Next(out var f, out _))
                    {
                        switch (f)
                        {
                            case 3: modelType = (int)trainer.Varint(); break;
                            case 35: byteFallback = trainer.Varint() != 0; break;
                            case 40: unk = (int)trainer.Varint(); break;
                            case 41: bos = (int)trainer.Varint(); break;
                            case 42: eos = (int)trainer.Varint(); break;
                            default: trainer.Skip(); break;
                        }
                    }
                    break;
                case 3:
                    var normalizer = model.Message();
                    while (normalizer.Next(out var f, out _))
                    {
                        switch (f)
                        {
                            case 1: normalizerName = normalizer.String(); break;
                            case 2: charsmapLength = normalizer.Bytes().Length; break;
                            case 3: addDummyPrefix = normalizer.Varint() != 0; break;
                            case 4: removeExtra = normalizer.Varint() != 0; break;
                            case 5: escape = normalizer.Varint() != 0; break;
                            default: normalizer.Skip(); break;
                        }
                    }
                    break;
                default:
                    model.Skip();
                    break;
            }
        }
        if (pieces.Count == 0) throw new InvalidDataException($"{name}: no pieces (not a SentencePiece model?)");
        if (modelType != ModelTypeBpe) throw new NotSupportedException($"{name}: SentencePiece model_type {modelType} (only BPE = 2 is supported)");
        if (charsmapLength > 0) throw new NotSupportedException($"{name}: normalizer '{normalizerName}' has a precompiled character map (only identity is supported)");
        if (!escape) throw new NotSupportedException($"{name}: escape_whitespaces=false is not supported");

        // A negative id in TrainerSpec means "this model has no such piece".
        var vocab = new SentencePieceVocab([.. pieces], [.. scores], [.. kinds], Math.Max(bos, -1), Math.Max(eos, -1), unk);
        return new SentencePieceBpeTokenizer(vocab, new SentencePieceOptions
        {
            AddDummyPrefix = addDummyPrefix,
            RemoveExtraWhitespaces = removeExtra,
            ByteFallback = byteFallback,
        });
    }

    /// <summary>Protobuf wire format (protobuf.dev/programming-guides/encoding): tag = field &lt;&lt; 3 | wire type;
    /// 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.</summary>
    private ref struct ProtoReader(ReadOnlySpan<byte> data, string name)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;
        private int _wireType;

        public bool Next(out int field, out int wireType)
        {
            field = wireType = 0;
            if (_pos >= _data.Length) return false;
            var tag = Varint();
            field = (int)(tag >> 3);
            wireType = _wireType = (int)(tag & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _data.Length) throw Malformed();
                var b = _data[_pos++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw Malformed();
        }

        public float Float()
        {
            if (_wireType != 5 || _pos + 4 > _data.Length) throw Malformed();
            var value = BitConverter.ToSingle(_data.Slice(_pos, 4)); // little-endian on every platform .NET runs this on
            _pos += 4;
            return value;
        }

        public ReadOnlySpan<byte> Bytes()
        {
            if (_wireType != 2) throw Malformed();
            var length = (int)Varint();
            if (length < 0 || _pos + length > _data.Length) throw Malformed();
            var slice = _data.Slice(_pos, length);
            _pos += length;
            return slice;
        }

        public string String() => Encoding.UTF8.GetString(Bytes());

        public ProtoReader Message() => new(Bytes(), name);

        public void Skip()
        {
            switch (_wireType)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: Bytes(); break;
                case 5: _pos += 4; break;
                default: throw Malformed();
            }
            if (_pos > _data.Length) throw Malformed();
        }

        private readonly InvalidDataException Malformed() => new($"{name}: malformed protobuf at byte {_pos}");
    }
}
