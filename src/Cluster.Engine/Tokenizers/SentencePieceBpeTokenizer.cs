using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// SentencePiece-style BPE over scored pieces: the algorithm of SentencePiece's bpe_model.cc, which
/// llama2.c's run.c and llama.cpp's SPM tokenizer repeat. Text is normalized (dummy prefix, spaces as
/// the space symbol), split into characters, and adjacent symbols are merged while their concatenation
/// is a piece, highest score first, leftmost on ties; characters left without a piece become byte
/// pieces &lt;0xXX&gt; (byte fallback) or UNK.
/// Loaders: <see cref="SentencePieceModelFile"/>, <see cref="Llama2cTokenizer"/>, <see cref="GgufTokenizer"/>.
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITokenizer
{
    private readonly SentencePieceVocab _vocab;
    private readonly SentencePieceOptions _options;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _anyPiece;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _mergeable;
    private readonly int[] _byteIds = new int[256];
    private readonly byte[][] _bytes, _bytesAtStart;
    private readonly bool _splitAtSpaces, _hasUnused;
    private readonly WordCache _cache = new();
    [ThreadStatic] private static Scratch? t_scratch;
    private static readonly byte[] UnknownSurface = Encoding.UTF8.GetBytes(" \u2047 "); // SentencePiece's default unk_surface

    public SentencePieceBpeTokenizer(SentencePieceVocab vocab, SentencePieceOptions options, string? chatTemplate = null)
    {
        ChatTemplate = chatTemplate;
        _vocab = vocab;
        _options = options;
        var any = new Dictionary<string, int>(vocab.Count, StringComparer.Ordinal);
        var mergeable = new Dictionary<string, int>(vocab.Count, StringComparer.Ordinal);
        Array.Fill(_byteIds, -1);
        _bytes = new byte[vocab.Count][];
        _bytesAtStart = new byte[vocab.Count][];
        for (var id = 0; id < vocab.Count; id++)
        {
            var piece = vocab.Pieces[id];
            var kind = vocab.Kinds[id];
            any.TryAdd(piece, id); // first id wins on duplicates, as a sorted lookup of the first match would
            if (options.MergeIntoAnyPiece || kind is PieceKind.Normal or PieceKind.UserDefined or PieceKind.Unused) mergeable.TryAdd(piece, id);
            _hasUnused |= kind == PieceKind.Unused && !options.MergeIntoAnyPiece;
            var isByte = SentencePieceVocab.TryParseByte(piece, out var b) && kind == PieceKind.Byte;
            if (isByte && _byteIds[b] < 0) _byteIds[b] = id;
            (_bytes[id], _bytesAtStart[id]) = Surface(piece, kind, b);
        }
        _anyPiece = any.GetAlternateLookup<ReadOnlySpan<char>>();
        _mergeable = mergeable.GetAlternateLookup<ReadOnlySpan<char>>();
        _splitAtSpaces = !mergeable.Keys.Any(p => SpansWordStart(p, options.SpaceSymbol));
    }

    public int VocabSize => _vocab.Count;
    public int BosId => _vocab.BosId;
    public int EosId => _vocab.EosId;
    public SentencePieceVocab Vocab => _vocab;
    public string? ChatTemplate { get; }

    public string TokenText(int id) => _vocab.Pieces[id];

    public ReadOnlySpan<byte> TokenBytes(int previousId, int id) =>
        (uint)id >= (uint)_bytes.Length ? []
        // The dummy prefix's space is not part of the text: drop it from the first piece (llama2.c: after BOS).
        : previousId < 0 || previousId == BosId ? _bytesAtStart[id] : _bytes[id];

    public string Decode(IEnumerable<int> ids) => TokenizerText.Decode(this, ids);

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        var normalized = Normalize(text);
        if (normalized.Length == 0) return [.. ids];
        var scratch = t_scratch ??= new Scratch();
        if (!_splitAtSpaces)
        {
            EncodeWord(normalized, ids, scratch);
            return [.. ids];
        }
        // No piece holds a space after another character, so no merge crosses the start of a word
        // (a run of spaces and what follows it): words merge independently and repeated words are cached.
        var span = normalized.AsSpan();
        var space = _options.SpaceSymbol;
        for (var start = 0; start < span.Length;)
        {
            var end = start + 1;
            while (end < span.Length && !(span[end] == space && span[end - 1] != space)) end++;
            var word = span[start..end];
            if (!_cache.TryGet(word, out var wordIds))
            {
                var before = ids.Count;
                EncodeWord(word, ids, scratch);
                _cache.Add(word, ids.GetRange(before, ids.Count - before).ToArray());
            }
            else ids.AddRange(wordIds);
            start = end;
        }
        return [.. ids];
    }

    /// <summary>SentencePiece normalizer.cc for an identity character map: optionally trim and squeeze
    /// spaces, prepend the dummy-prefix space to non-empty text, and write spaces as the space symbol.</summary>
    internal string Normalize(string text)
    {
        if (_options.RemoveExtraWhitespaces)
            text = string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (text.Length == 0) return text;
        if (_options.AddDummyPrefix) text = " " + text;
        return _options.SpaceSymbol == ' ' ? text : text.Replace(' ', _options.SpaceSymbol);
    }

    private void EncodeWord(ReadOnlySpan<char> word, List<int> ids, Scratch scratch)
    {
        var symbols = scratch.Symbols(word.Length);
        var n = 0;
        for (var i = 0; i < word.Length; n++)
        {
            // One symbol per Unicode character (UTF-16 surrogate pairs stay together), as run.c's UTF-8 walk.
            var length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            symbols[n] = new BpeSymbol { Start = i, Length = length, Id = Lookup(word.Slice(i, length)), Prev = n - 1, Next = n + 1 };
            i += length;
        }
        symbols[n - 1].Next = -1;
        Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>>? splits = _hasUnused ? scratch.UnusedSplits : null;
        if (_hasUnused) scratch.UnusedSplits.Dictionary.Clear();
        var rule = new ScoreRule(_mergeable, _vocab.Scores, _vocab.Kinds, splits);
        scratch.Merger.Merge(word, symbols[..n], ref rule);
        for (var k = 0; k >= 0; k = symbols[k].Next)
        {
            ref readonly var s = ref symbols[k];
            if (s.Id < 0) AddFallback(word.Slice(s.Start, s.Length), ids);
            else if (splits is { } unusedSplits && _vocab.Kinds[s.Id] == PieceKind.Unused) Resegment(word.Slice(s.Start, s.Length), unusedSplits, ids);
            else ids.Add(s.Id);
        }
        // As with the symbols (BpeMerger.KeptSymbols): a long word's splits are not kept for the thread's life.
        if (_hasUnused && scratch.UnusedSplits.Dictionary.Count > BpeMerger.KeptSymbols)
        {
            scratch.UnusedSplits.Dictionary.Clear();
            scratch.UnusedSplits.Dictionary.TrimExcess();
        }
    }

    /// <summary>SentencePiece bpe_model.cc: an UNUSED piece may be merged through but never emitted; it is split
    /// back, recursively, the way it was formed (the split last proposed for that piece string).</summary>
    private void Resegment(ReadOnlySpan<char> piece, Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> splits, List<int> ids)
    {
        var id = Lookup(piece);
        if (id < 0) AddFallback(piece, ids);
        else if (_vocab.Kinds[id] != PieceKind.Unused || !splits.TryGetValue(piece, out var leftLength)) ids.Add(id);
        else
        {
            Resegment(piece[..leftLength], splits, ids);
            Resegment(piece[leftLength..], splits, ids);
        }
    }

    private int Lookup(ReadOnlySpan<char> piece) => _anyPiece.TryGetValue(piece, out var id) ? id : -1;

    private void AddFallback(ReadOnlySpan<char> chars, List<int> ids)
    {
        Span<byte> utf8 = stackalloc byte[8];
        var count = Encoding.UTF8.GetBytes(chars, utf8);
        var allBytes = _options.ByteFallback;
        for (var i = 0; i < count && allBytes; i++) allBytes = _byteIds[utf8[i]] >= 0;
        if (!allBytes) { ids.Add(_vocab.UnkId); return; }
        for (var i = 0; i < count; i++) ids.Add(_byteIds[utf8[i]]);
    }

    private (byte[] Normal, byte[] AtStart) Surface(string piece, PieceKind kind, byte value)
    {
        switch (kind)
        {
            case PieceKind.Control: return ([], []);
            case PieceKind.Unknown: return (UnknownSurface, UnknownSurface);
            case PieceKind.Byte: return ([value], [value]);
        }
        var text = _options.SpaceSymbol == ' ' ? piece : piece.Replace(_options.SpaceSymbol, ' ');
        var bytes = Encoding.UTF8.GetBytes(text);
        return (bytes, _options.AddDummyPrefix && text.StartsWith(' ') ? bytes[1..] : bytes);
    }

    /// <summary>True when <paramref name="piece"/> holds a space symbol right after another character:
    /// such a piece can join a word to the spaces that start the next one.</summary>
    internal static bool SpansWordStart(string piece, char space)
    {
        for (var i = 1; i < piece.Length; i++)
            if (piece[i] == space && piece[i - 1] != space) return true;
        return false;
    }

    /// <summary>Merge rule: the concatenation must be a (mergeable) piece; its score is the priority.
    /// User-defined pieces are frozen, as SentencePiece's prefix matcher marks them. When
    /// <paramref name="unusedSplits"/> is given, each proposed UNUSED piece records its left part's length.</summary>
    private readonly struct ScoreRule(Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> pieces, float[] scores, PieceKind[] kinds,
        Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>>? unusedSplits) : IMergeRule
    {
        public bool TryMerge(ReadOnlySpan<char> text, in BpeSymbol left, in BpeSymbol right, out int id, out float priority)
        {
            priority = 0;
            var merged = text.Slice(left.Start, left.Length + right.Length);
            if ((left.Id >= 0 && kinds[left.Id] == PieceKind.UserDefined) || (right.Id >= 0 && kinds[right.Id] == PieceKind.UserDefined)
                || !pieces.TryGetValue(merged, out id))
            {
                id = -1;
                return false;
            }
            if (unusedSplits is { } splits && kinds[id] == PieceKind.Unused) splits[merged] = left.Length;
            priority = scores[id];
            return true;
        }
    }

    /// <summary>Per-thread buffers, so that the tokenizer itself stays immutable and thread-safe.</summary>
    private sealed class Scratch
    {
        private BpeSymbol[] _symbols = new BpeSymbol[64];
        public readonly BpeMerger Merger = new();
        public readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> UnusedSplits =
            new Dictionary<string, int>(StringComparer.Ordinal).GetAlternateLookup<ReadOnlySpan<char>>();

        public Span<BpeSymbol> Symbols(int count) => BpeMerger.Symbols(ref _symbols, count);
    }
}
