using System.Text;

namespace Cluster.Engine.Tokenizers;

/// <summary>Where a SentencePiece-style tokenizer.json puts the "▁" that marks a word start
/// (HF normalizers Prepend/Replace, or pre_tokenizers Metaspace with its prepend_scheme).</summary>
public enum SpacePrefix
{
    /// <summary>Byte-level models: spaces are bytes like any other.</summary>
    None,
    /// <summary>Normalizer Prepend("▁") + Replace(" ", "▁") (Llama 2): every non-empty segment between added tokens.</summary>
    EverySegment,
    /// <summary>Metaspace prepend_scheme "always": every segment that does not already start with "▁".</summary>
    Always,
    /// <summary>Metaspace prepend_scheme "first": only the segment at offset 0, if it does not already start with "▁".</summary>
    First,
    /// <summary>Metaspace prepend_scheme "never", or a Replace normalizer alone: spaces become "▁", nothing is prepended.</summary>
    Never,
}

/// <summary>What a tokenizer.json says, reduced to what encoding and decoding need (see <see cref="HfTokenizerJson"/>).</summary>
public sealed record HfBpeConfig
{
    public required Dictionary<string, int> Vocab { get; init; }
    /// <summary>Merges in rank order, as token pairs.</summary>
    public required List<(string Left, string Right)> Merges { get; init; }
    public IReadOnlyList<AddedToken> AddedTokens { get; init; } = [];
    public bool ByteLevel { get; init; }
    public ByteLevelSplit Split { get; init; } = ByteLevelSplit.None;
    /// <summary>HF Digits(individual_digits=true) before the byte-level split (SmolLM2): every ASCII digit is its own word.</summary>
    public bool SplitDigits { get; init; }
    /// <summary>HF NFC normalizer (Qwen2). string.Normalize does it where ICU is loaded; under
    /// InvariantGlobalization .NET leaves the text as it is, which is exact for text already in NFC.</summary>
    public bool Nfc { get; init; }
    public bool AddPrefixSpace { get; init; }
    public SpacePrefix SpacePrefix { get; init; } = SpacePrefix.None;
    public bool ByteFallback { get; init; }
    public bool FuseUnk { get; init; }
    public bool IgnoreMerges { get; init; }
    public string? UnkToken { get; init; }
    /// <summary>Decoder strips one leading space from the first token (HF Strip(" ", 1, 0) or Metaspace).</summary>
    public bool StripLeadingSpace { get; init; }
    public int BosId { get; init; } = -1;
    public int EosId { get; init; } = -1;
    public string? ChatTemplate { get; init; }
}

/// <summary>
/// Hugging Face tokenizers' BPE model (models/bpe/model.rs and word.rs) with the pipeline around it:
/// added tokens are split off first, then each plain segment is normalized / pre-tokenized into words
/// (byte-level: split regex and byte-to-char map; SentencePiece-style: "▁" for spaces), then each word's
/// characters merge by merge rank, lowest first, leftmost on ties. Characters without a token become
/// &lt;0xXX&gt; tokens (byte_fallback) or UNK (fused into one when fuse_unk).
/// </summary>
public sealed class HfBpeTokenizer : ITokenizer
{
    private const char Metaspace = '\u2581';
    private readonly HfBpeConfig _config;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocab;
    private readonly Dictionary<long, (int Rank, int Id)> _merges = [];
    private readonly AddedTokenMatcher _added;
    private readonly string[] _tokens;
    private readonly byte[][] _bytes, _bytesAtStart;
    private readonly int[] _byteIds = new int[256];
    private readonly int _unkId = -1;
    private readonly bool _splitAtSpaces;
    private readonly WordCache _cache = new();
    [ThreadStatic] private static Scratch? t_scratch;

    public HfBpeTokenizer(HfBpeConfig config)
    {
        _config = config;
        _vocab = config.Vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        var size = Math.Max(config.Vocab.Count == 0 ? 0 : config.Vocab.Values.Max() + 1, config.AddedTokens.Count == 0 ? 0 : config.AddedTokens.Max(t => t.Id) + 1);
        _tokens = new string[size];
        foreach (var (token, id) in config.Vocab) _tokens[id] = token;
        foreach (var t in config.AddedTokens) _tokens[t.Id] = t.Content;
        for (var rank = 0; rank < config.Merges.Count; rank++)
        {
            var (left, right) = config.Merges[rank];
            if (config.Vocab.TryGetValue(left, out var a) && config.Vocab.TryGetValue(right, out var b) && config.Vocab.TryGetValue(left + right, out var merged))
                _merges.TryAdd(Key(a, b), (rank, merged));
        }
        _added = new AddedTokenMatcher(config.AddedTokens);
        if (config.UnkToken is not null && config.Vocab.TryGetValue(config.UnkToken, out var unk)) _unkId = unk;
        for (var b = 0; b < 256; b++) _byteIds[b] = config.Vocab.GetValueOrDefault($"<0x{b:X2}>", -1);

        var special = config.AddedTokens.Where(t => t.Special).Select(t => t.Id).ToHashSet();
        _bytes = new byte[size][];
        _bytesAtStart = new byte[size][];
        for (var id = 0; id < size; id++) (_bytes[id], _bytesAtStart[id]) = Surface(id, special.Contains(id));
        // As in SentencePieceBpeTokenizer: words can be merged one at a time when no token joins a
        // character to the "▁" that starts the next word.
        _splitAtSpaces = config.SpacePrefix != SpacePrefix.None
            && !config.Vocab.Keys.Any(t => SentencePieceBpeTokenizer.SpansWordStart(t, Metaspace));
    }

    public int VocabSize => _tokens.Length;
    public int BosId => _config.BosId;
    public int EosId => _config.EosId;
    public string? ChatTemplate => _config.ChatTemplate;
    public IReadOnlyList<AddedToken> AddedTokens => _config.AddedTokens;

    public string TokenText(int id) => (uint)id < (uint)_tokens.Length ? _tokens[id] ?? "" : "";

    public ReadOnlySpan<byte> TokenBytes(int previousId, int id) =>
        (uint)id >= (uint)_bytes.Length ? []
        : _config.StripLeadingSpace && (previousId < 0 || previousId == BosId) ? _bytesAtStart[id] : _bytes[id];

    public string Decode(IEnumerable<int> ids) => TokenizerText.Decode(this, ids);

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        var scratch = t_scratch ??= new Scratch();
        var segments = _added.IsEmpty ? [(0, text.Length, -1)] : _added.Split(text);
        foreach (var (start, length, addedId) in segments)
        {
            if (addedId >= 0) ids.Add(addedId);
            else if (length > 0) EncodeSegment(text.AsSpan(start, length), start == 0, ids, scratch);
        }
        return [.. ids];
    }

    private void EncodeSegment(ReadOnlySpan<char> segment, bool atTextStart, List<int> ids, Scratch scratch)
    {
        if (_config.Nfc) segment = segment.ToString().Normalize(NormalizationForm.FormC);
        if (_config.ByteLevel)
        {
            if (!_config.SplitDigits)
            {
                EncodeByteLevelPiece(segment, ids, scratch);
                return;
            }
            for (var start = 0; start < segment.Length;)
            {
                var end = start + 1;
                if (!char.IsAsciiDigit(segment[start])) while (end < segment.Length && !char.IsAsciiDigit(segment[end])) end++;
                EncodeByteLevelPiece(segment[start..end], ids, scratch);
                start = end;
            }
            return;
        }
        // Spaces become "▁" only where the file says so (Replace normalizer or Metaspace); a plain BPE keeps them.
        var prepared = _config.SpacePrefix == SpacePrefix.None ? segment.ToString() : segment.ToString().Replace(' ', Metaspace);
        var prepend = _config.SpacePrefix switch
        {
            SpacePrefix.EverySegment => true,
            SpacePrefix.Always => prepared[0] != Metaspace,
            SpacePrefix.First => atTextStart && prepared[0] != Metaspace,
            _ => false,
        };
        if (prepend) prepared = Metaspace + prepared;
        if (!_splitAtSpaces)
        {
            EncodeWordCached(prepared, ids, scratch);
            return;
        }
        for (var start = 0; start < prepared.Length;)
        {
            var end = start + 1;
            while (end < prepared.Length && !(prepared[end] == Metaspace && prepared[end - 1] != Metaspace)) end++;
            EncodeWordCached(prepared.AsSpan(start, end - start), ids, scratch);
            start = end;
        }
    }

    /// <summary>HF ByteLevel pre-tokenizer on one piece: optional prefix space, split regex, then each word's
    /// UTF-8 bytes as chars.</summary>
    private void EncodeByteLevelPiece(ReadOnlySpan<char> piece, List<int> ids, Scratch scratch)
    {
        var text = _config.AddPrefixSpace && piece[0] != ' ' ? " " + piece.ToString() : piece.ToString();
        var words = scratch.Words;
        words.Clear();
        ByteLevel.Split(text, _config.Split, words);
        foreach (var (start, length) in words)
        {
            // Cached by the word as written, so a hit costs no byte-to-char mapping.
            var word = text.AsSpan(start, length);
            if (_cache.TryGet(word, out var cached))
            {
                ids.AddRange(cached);
                continue;
            }
            var before = ids.Count;
            EncodeWord(ByteLevel.Encode(word), ids, scratch);
            _cache.Add(word, ids.GetRange(before, ids.Count - before).ToArray());
        }
    }

    private void EncodeWordCached(ReadOnlySpan<char> word, List<int> ids, Scratch scratch)
    {
        if (_cache.TryGet(word, out var cached))
        {
            ids.AddRange(cached);
            return;
        }
        var before = ids.Count;
        EncodeWord(word, ids, scratch);
        _cache.Add(word, ids.GetRange(before, ids.Count - before).ToArray());
    }

    /// <summary>HF BPE merge_word: one symbol per character (or per byte of a character missing from the
    /// vocabulary, or one fused UNK), then merges by rank.</summary>
    private void EncodeWord(ReadOnlySpan<char> word, List<int> ids, Scratch scratch)
    {
        if (_config.IgnoreMerges && _vocab.TryGetValue(word, out var whole))
        {
            ids.Add(whole);
            return;
        }
        var symbols = scratch.Symbols(word.Length * 4);
        var n = 0;
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < word.Length;)
        {
            var length = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            var ch = word.Slice(i, length);
            if (_vocab.TryGetValue(ch, out var id)) symbols[n++] = new BpeSymbol { Start = i, Length = length, Id = id };
            else
            {
                var count = Encoding.UTF8.GetBytes(ch, utf8);
                var allBytes = _config.ByteFallback;
                for (var k = 0; k < count && allBytes; k++) allBytes = _byteIds[utf8[k]] >= 0;
                if (allBytes)
                {
                    // Byte tokens never merge (no merge lists them), so their spans only need to be distinct.
                    for (var k = 0; k < count; k++) symbols[n++] = new BpeSymbol { Start = i, Length = length, Id = _byteIds[utf8[k]] };
                }
                else if (_config.FuseUnk && n > 0 && symbols[n - 1].Id == _unkId) symbols[n - 1].Length += length;
                else if (_unkId >= 0) symbols[n++] = new BpeSymbol { Start = i, Length = length, Id = _unkId };
                else throw new InvalidOperationException($"'{ch}' has no token and the tokenizer has no unk_token");
            }
            i += length;
        }
        for (var k = 0; k < n; k++)
        {
            symbols[k].Prev = k - 1;
            symbols[k].Next = k + 1 < n ? k + 1 : -1;
        }
        if (n == 0) return;
        var rule = new RankRule(_merges);
        scratch.Merger.Merge(word, symbols[..n], ref rule);
        for (var k = 0; k >= 0; k = symbols[k].Next) ids.Add(symbols[k].Id);
    }

    private (byte[] Normal, byte[] AtStart) Surface(int id, bool special)
    {
        var token = _tokens[id];
        if (token is null || special) return ([], []);
        byte[] bytes;
        if (_config.ByteLevel) bytes = ByteLevel.Decode(token);
        else if (_config.ByteFallback && SentencePieceVocab.TryParseByte(token, out var b)) return ([b], [b]);
        else bytes = Encoding.UTF8.GetBytes(token.Replace(Metaspace, ' '));
        return (bytes, bytes.Length > 0 && bytes[0] == (byte)' ' ? bytes[1..] : bytes);
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>HF merge priority: the pair's rank in "merges" (lower first); the merged token comes with it.</summary>
    private readonly struct RankRule(Dictionary<long, (int Rank, int Id)> merges) : IMergeRule
    {
        public bool TryMerge(ReadOnlySpan<char> text, in BpeSymbol left, in BpeSymbol right, out int id, out float priority)
        {
            if (merges.TryGetValue(Key(left.Id, right.Id), out var m))
            {
                id = m.Id;
                priority = -m.Rank;
                return true;
            }
            id = -1;
            priority = 0;
            return false;
        }
    }

    private sealed class Scratch
    {
        private BpeSymbol[] _symbols = new BpeSymbol[64];
        public readonly BpeMerger Merger = new();
        public readonly List<(int Start, int Length)> Words = [];

        public Span<BpeSymbol> Symbols(int count) => BpeMerger.Symbols(ref _symbols, count);
    }
}
