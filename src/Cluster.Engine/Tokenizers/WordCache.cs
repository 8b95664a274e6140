using System.Collections.Concurrent;

namespace Cluster.Engine.Tokenizers;

/// <summary>
/// Word to ids, shared by every call on one tokenizer (HF tokenizers' BPE keeps the same kind of cache):
/// natural text repeats a few thousand words, so most words skip the merge loop. Thread-safe; stops
/// growing at <see cref="Capacity"/> entries and skips long words, so memory stays bounded.
/// </summary>
internal sealed class WordCache
{
    public const int Capacity = 100_000;
    private const int MaxWordLength = 64;
    private readonly ConcurrentDictionary<string, int[]> _map = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    private int _count; // ConcurrentDictionary.Count takes every lock: keep our own

    public WordCache() => _lookup = _map.GetAlternateLookup<ReadOnlySpan<char>>();

    public bool TryGet(ReadOnlySpan<char> word, out int[] ids) => _lookup.TryGetValue(word, out ids!);

    public void Add(ReadOnlySpan<char> word, int[] ids)
    {
        if (word.Length <= MaxWordLength && Volatile.Read(ref _count) < Capacity && _lookup.TryAdd(word, ids))
            Interlocked.Increment(ref _count);
    }
}
