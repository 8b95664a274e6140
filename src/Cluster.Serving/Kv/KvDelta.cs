using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Serving.Hosting;

namespace Cluster.Serving.Kv;

/// <summary>
/// One layer of an incremental checkpoint (issue 17): against a base version of the same sequence,
/// <see cref="Sent"/> holds the tokens whose K and V changed or are new (per head, in original order)
/// and <see cref="Removed"/> the base's tokens that are gone. Every other token of the base keeps its
/// data. Defined on the blocks as they travel (tokens in original order, identified per head by their
/// original position), so it is right for every policy: a dense cache only appends; window and
/// sink_window evict the oldest and re-rotate the sinks (and, once per period, every key), qfilters
/// and knorm evict by score; whatever changed is compared, not assumed.
/// </summary>
public sealed record KvLayerDelta(int Layer, KvLayerBlock Sent, int[][] Removed);

/// <summary>Computes deltas between caches (decode), and applies them onto stored blocks or composes them with a stored delta (cache manager).</summary>
public static class KvDelta
{
    /// <summary>
    /// What <paramref name="next"/> changed since <paramref name="previous"/> (both whole caches, one
    /// block per layer, tokens of each head in ascending original position, as <see cref="KvCacheSnapshot.Capture"/>
    /// gives them). A token present in both is sent only if its K or V differs in any bit (as their
    /// hashes tell: <paramref name="previous"/> is digested first, as a decode worker holds it).
    /// </summary>
    public static List<KvLayerDelta> Diff(IReadOnlyList<KvLayerBlock> previous, IReadOnlyList<KvLayerBlock> next, int headDim) =>
        Diff(KvDigest.Of(previous, headDim), next, headDim, out _);

    /// <summary>
    /// What <paramref name="next"/> changed since the cache <paramref name="previous"/> digests: a token
    /// present in both is sent when its K or V row hashes differently. <paramref name="nextDigest"/> is
    /// <paramref name="next"/>'s own digest (the base of the checkpoint after it), made in the same pass.
    /// </summary>
    public static List<KvLayerDelta> Diff(KvDigest previous, IReadOnlyList<KvLayerBlock> next, int headDim, out KvDigest nextDigest)
    {
        var result = new List<KvLayerDelta>(next.Count);
        var digests = new List<KvDigest.Layer>(next.Count);
        foreach (var n in next)
        {
            var diff = new LayerDiff(PreviousLayer(previous, n.Layer, n.Positions.Length), headDim);
            int offset = 0;
            for (int h = 0; h < n.Positions.Length; h++)
            {
                int rows = n.Positions[h].Length * headDim;
                diff.Head(h, n.Positions[h], n.Keys.AsSpan(offset, rows), n.Values.AsSpan(offset, rows));
                offset += rows;
            }
            result.Add(diff.Finish(null, out var digest));
            digests.Add(digest);
        }
        nextDigest = KvDigest.Of(digests);
        return result;
    }

    /// <summary>
    /// The same delta as capturing <paramref name="cache"/> (<see cref="KvCacheSnapshot.Capture"/>) and
    /// diffing the blocks, read where the rows are: one head at a time through a host buffer the
    /// caller keeps, so that a checkpoint copies only the rows it sends. A decode worker makes it on
    /// the batch thread between steps; capturing there copied the whole cache into fresh memory every
    /// checkpoint (13.8 MB for 300 tokens of SmolLM2-135M), page faults and all, while the step waited.
    /// Where <paramref name="previous"/> was read from this very layer at its current
    /// <see cref="KvCacheLayer.Revision"/> (nothing rewritten since, only rows appended), a head's digested
    /// rows are taken as they were and only the appended ones are read and hashed: reading and hashing every
    /// row took about 10 ms at 1,800 tokens of SmolLM2-135M (83 MB) every 16 tokens, 0.6 ms a token of the
    /// step's time (`llmctl bench checkpoint`).
    /// </summary>
    public static List<KvLayerDelta> Diff(KvDigest previous, IComputeBackend backend, SequenceKvCache cache, ref float[] scratch, out KvDigest nextDigest)
    {
        var result = new List<KvLayerDelta>(cache.Layers.Length);
        var digests = new List<KvDigest.Layer>(cache.Layers.Length);
        for (int layer = 0; layer < cache.Layers.Length; layer++)
        {
            var l = cache.Layers[layer];
            int hd = l.HeadDim;
            var before = PreviousLayer(previous, layer, l.KvHeads);
            bool unchanged = ReferenceEquals(before.Source, l) && before.Revision == l.Revision;
            var diff = new LayerDiff(before, hd);
            for (int h = 0; h < l.KvHeads; h++)
            {
                int n = l.Lengths[h];
                var positions = l.Positions.AsSpan(h * l.Capacity, n).ToArray();
                // Rows from the first not digested on; all of them when the digest does not describe the held rows.
                int from = unchanged && AppendedTo(before.Positions[h], positions) ? before.Positions[h].Length : 0;
                int rows = (n - from) * hd;
                if (scratch.Length < 2 * rows) scratch = new float[Math.Max(2 * rows, 2 * scratch.Length)];
                var keys = scratch.AsSpan(0, rows);
                var values = scratch.AsSpan(rows, rows);
                if (rows > 0)
                {
                    backend.CopyToHost(l.K, l.Offset(h, from), keys);
                    backend.CopyToHost(l.V, l.Offset(h, from), values);
                }
                if (from > 0) diff.Appended(h, positions, from, keys, values);
                else
                {
                    KvCacheSnapshot.InOriginalOrder(positions, keys, values, hd);
                    diff.Head(h, positions, keys, values);
                }
            }
            result.Add(diff.Finish(l, out var digest));
            digests.Add(digest);
        }
        nextDigest = KvDigest.Of(digests);
        return result;
    }

    /// <summary>Whether a head's slots hold the digested positions first, in the same order, then only later
    /// positions in increasing order: its rows in original order are then the digested rows followed by the
    /// appended ones (when the layer's revision also says that no held row was rewritten).</summary>
    private static bool AppendedTo(int[] digested, int[] held)
    {
        if (digested.Length == 0 || held.Length < digested.Length || !held.AsSpan(0, digested.Length).SequenceEqual(digested)) return false;
        for (int i = digested.Length; i < held.Length; i++)
            if (held[i] <= held[i - 1]) return false;
        return true;
    }

    private static KvDigest.Layer PreviousLayer(KvDigest previous, int layer, int heads)
    {
        var p = previous.Layers.FirstOrDefault(b => b.Index == layer) ?? throw new ArgumentException($"no previous block for layer {layer}");
        if (p.Positions.Length != heads) throw new ArgumentException($"layer {layer}: {p.Positions.Length} heads before, {heads} now");
        return p;
    }

    /// <summary>One layer's delta, built head by head from rows in original order: each row hashed once
    /// (the next digest), compared with the previous digest's row at the same position, and copied only when sent.</summary>
    private sealed class LayerDiff(KvDigest.Layer previous, int headDim)
    {
        private readonly int[][] _sent = new int[previous.Positions.Length][];
        private readonly int[][] _removed = new int[previous.Positions.Length][];
        private readonly int[][] _positions = new int[previous.Positions.Length][];
        private readonly List<ulong> _keyHashes = [], _valueHashes = [];
        private readonly List<float> _keys = [], _values = [];
        private int _previousOffset; // first row of the head in the previous digest

        public void Head(int h, int[] positions, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
        {
            var pp = previous.Positions[h];
            var sent = new List<int>();
            var gone = new List<int>();
            int i = 0, j = 0;
            while (i < pp.Length || j < positions.Length)
            {
                if (j == positions.Length || (i < pp.Length && pp[i] < positions[j])) { gone.Add(pp[i++]); continue; }
                ulong k = KvDigest.RowHash(keys.Slice(j * headDim, headDim)), v = KvDigest.RowHash(values.Slice(j * headDim, headDim));
                _keyHashes.Add(k);
                _valueHashes.Add(v);
                bool both = i < pp.Length && pp[i] == positions[j];
                if (!both || previous.Keys[_previousOffset + i] != k || previous.Values[_previousOffset + i] != v)
                {
                    sent.Add(positions[j]);
                    _keys.AddRange(keys.Slice(j * headDim, headDim));
                    _values.AddRange(values.Slice(j * headDim, headDim));
                }
                if (both) i++;
                j++;
            }
            _sent[h] = [.. sent];
            _removed[h] = [.. gone];
            _positions[h] = positions;
            _previousOffset += pp.Length;
        }

        /// <summary>A head whose first <paramref name="from"/> slots hold the digested rows unchanged (see
        /// <c>AppendedTo</c>): their hashes are carried over, and the rows after them, all new
        /// (<paramref name="keys"/> and <paramref name="values"/>), are hashed and sent.</summary>
        public void Appended(int h, int[] positions, int from, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
        {
            _keyHashes.AddRange(previous.Keys.AsSpan(_previousOffset, from));
            _valueHashes.AddRange(previous.Values.AsSpan(_previousOffset, from));
            for (int r = 0; r < positions.Length - from; r++)
            {
                _keyHashes.Add(KvDigest.RowHash(keys.Slice(r * headDim, headDim)));
                _valueHashes.Add(KvDigest.RowHash(values.Slice(r * headDim, headDim)));
            }
            _keys.AddRange(keys);
            _values.AddRange(values);
            _sent[h] = positions[from..];
            _removed[h] = [];
            _positions[h] = positions;
            _previousOffset += from;
        }

        /// <param name="source">The live layer the rows were read from: the digest remembers it and its revision.</param>
        public KvLayerDelta Finish(KvCacheLayer? source, out KvDigest.Layer digest)
        {
            digest = new KvDigest.Layer(previous.Index, _positions, [.. _keyHashes], [.. _valueHashes], source, source?.Revision ?? 0);
            return new KvLayerDelta(previous.Index, new KvLayerBlock(previous.Index, _sent, [.. _keys], [.. _values]), _removed);
        }
    }

    /// <summary>
    /// The whole cache a delta describes: <paramref name="baseLayers"/> (a stored version, one block per
    /// layer) with each head's <c>removed</c> tokens dropped, and the sent tokens added or replacing the
    /// base's token at the same position. Throws <see cref="InvalidRequestException"/> for a delta that
    /// does not fit the base (a removed token it lacks, positions out of order, a layer missing or twice).
    /// </summary>
    public static WireKvBlock[] Apply(IReadOnlyList<WireKvBlock> baseLayers, IReadOnlyList<(WireKvBlock Sent, int[][] Removed)> deltas, int headDim) =>
        Merge(baseLayers, null, deltas, headDim, whole: true, out _).Select(x => x.Sent).ToArray();

    /// <summary>
    /// <paramref name="second"/> (a delta on the cache <paramref name="first"/> makes of <paramref name="baseLayers"/>)
    /// and <paramref name="first"/> as one delta on <paramref name="baseLayers"/>: the tokens either sent (the
    /// second's rows where both did) and the base's tokens gone. What the cache manager keeps of a checkpoint
    /// instead of the whole cache it describes: its cost is the tokens that changed since the base, not the cache.
    /// Validates <paramref name="second"/> as <see cref="Apply"/> does. With no <paramref name="first"/>, the
    /// second alone, validated and copied. <paramref name="mostTokens"/>: per layer, the most tokens a head of the result keeps.
    /// </summary>
    public static (WireKvBlock Sent, int[][] Removed)[] Compose(IReadOnlyList<WireKvBlock> baseLayers, IReadOnlyList<(WireKvBlock Sent, int[][] Removed)>? first,
        IReadOnlyList<(WireKvBlock Sent, int[][] Removed)> second, int headDim, out int[] mostTokens) =>
        Merge(baseLayers, first, second, headDim, whole: false, out mostTokens);

    /// <summary>Where a kept token's row comes from: the base, the first delta or the second.</summary>
    private readonly record struct Row(int Position, byte Source, int Index);

    private static (WireKvBlock Sent, int[][] Removed)[] Merge(IReadOnlyList<WireKvBlock> baseLayers, IReadOnlyList<(WireKvBlock Sent, int[][] Removed)>? first,
        IReadOnlyList<(WireKvBlock Sent, int[][] Removed)> second, int headDim, bool whole, out int[] mostTokens)
    {
        mostTokens = new int[baseLayers.Count];
        var result = new (WireKvBlock Sent, int[][] Removed)[baseLayers.Count];
        foreach (var (sent, removed) in second)
        {
            if ((uint)sent.Layer >= result.Length || result[sent.Layer].Sent is not null) throw new InvalidRequestException($"delta for layer {sent.Layer} is out of range or sent twice");
            var b = baseLayers.FirstOrDefault(x => x.Layer == sent.Layer) ?? throw new InvalidRequestException($"the base has no layer {sent.Layer}");
            if (sent.Precision != b.Precision) throw new InvalidRequestException($"layer {sent.Layer}: delta in {sent.Precision.Name()}, base in {b.Precision.Name()}");
            int heads = b.Positions.Length;
            if (sent.Positions.Length != heads || removed.Length != heads) throw new InvalidRequestException($"layer {sent.Layer}: delta for {sent.Positions.Length} heads ({removed.Length} removed lists), the base has {heads}");
            var f = first?.First(x => x.Sent.Layer == sent.Layer);
            WireKvBlock[] sources = f is { } ff ? [b, ff.Sent, sent] : [b, sent];
            var positions = new int[heads][];
            var gone = new int[heads][];
            var rows = new List<Row>(b.Positions.Sum(p => p.Length) + sent.Positions.Sum(p => p.Length));
            int[] offsets = new int[sources.Length]; // first row of the head in each source
            for (int h = 0; h < heads; h++)
            {
                var bp = b.Positions[h];
                for (int k = 1; k < bp.Length; k++)
                    if (bp[k] <= bp[k - 1]) throw new KvBaseMissingException($"layer {sent.Layer} head {h}: the base's positions are not ascending");
                var kept = new List<Row>(bp.Length);
                for (int i = 0; i < bp.Length; i++) kept.Add(new Row(bp[i], 0, offsets[0] + i));
                if (f is { } fd) kept = Step(kept, fd.Sent.Positions[h], fd.Removed[h], 1, offsets[1], sent.Layer, h);
                kept = Step(kept, sent.Positions[h], removed[h], (byte)(sources.Length - 1), offsets[^1], sent.Layer, h);
                mostTokens[sent.Layer] = Math.Max(mostTokens[sent.Layer], kept.Count);
                // The whole cache holds every kept token; a composed delta the ones not taken from the base.
                var taken = whole ? kept : kept.FindAll(r => r.Source != 0);
                rows.AddRange(taken);
                positions[h] = [.. taken.Select(r => r.Position)];
                if (!whole) gone[h] = Gone(bp, kept);
                for (int s = 0; s < sources.Length; s++) offsets[s] += sources[s].Positions[h].Length;
            }
            int row = headDim * sent.Precision.Bytes();
            var keys = new byte[(long)rows.Count * row];
            var values = new byte[(long)rows.Count * row];
            for (int k = 0; k < rows.Count;)
            {
                // A run of consecutive rows of one source is one copy (a dense delta is two runs per head).
                var (_, source, firstRow) = rows[k];
                int n = 1;
                while (k + n < rows.Count && rows[k + n].Source == source && rows[k + n].Index == firstRow + n) n++;
                sources[source].Keys.AsSpan(firstRow * row, n * row).CopyTo(keys.AsSpan(k * row));
                sources[source].Values.AsSpan(firstRow * row, n * row).CopyTo(values.AsSpan(k * row));
                k += n;
            }
            result[sent.Layer] = (new WireKvBlock(sent.Layer, positions, sent.Precision, keys, values), whole ? [] : gone);
        }
        for (int l = 0; l < result.Length; l++)
            if (result[l].Sent is null) throw new InvalidRequestException($"the delta has no block for layer {l} (send an empty one for an unchanged layer)");
        return result;
    }

    /// <summary>One head's kept tokens after a delta: <paramref name="removed"/> dropped, <paramref name="sent"/>
    /// added or replacing the token at the same position (rows from <paramref name="source"/>, from <paramref name="offset"/>).</summary>
    private static List<Row> Step(List<Row> current, int[] sent, int[] removed, byte source, int offset, int layer, int h)
    {
        Ascending(sent, layer, h, "sent");
        Ascending(removed, layer, h, "removed");
        var next = new List<Row>(current.Count + sent.Length);
        int i = 0, j = 0, r = 0;
        while (i < current.Count || j < sent.Length)
        {
            if (j == sent.Length || (i < current.Count && current[i].Position < sent[j]))
            {
                int p = current[i].Position;
                if (r < removed.Length && removed[r] == p) { r++; i++; continue; } // gone
                if (r < removed.Length && removed[r] < p) throw new InvalidRequestException($"layer {layer} head {h}: removed position {removed[r]} is not in the base");
                next.Add(current[i++]);
            }
            else
            {
                if (i < current.Count && current[i].Position == sent[j])
                {
                    if (r < removed.Length && removed[r] == sent[j]) throw new InvalidRequestException($"layer {layer} head {h}: position {sent[j]} both removed and sent");
                    i++; // replaced
                }
                next.Add(new Row(sent[j], source, offset + j));
                j++;
            }
        }
        if (r != removed.Length) throw new InvalidRequestException($"layer {layer} head {h}: removed position {removed[r]} is not in the base");
        return next;
    }

    /// <summary>The base's positions no longer kept (both ascending).</summary>
    private static int[] Gone(int[] basePositions, List<Row> kept)
    {
        var gone = new List<int>();
        int k = 0;
        foreach (int p in basePositions)
        {
            while (k < kept.Count && kept[k].Position < p) k++;
            if (k == kept.Count || kept[k].Position != p) gone.Add(p);
        }
        return [.. gone];
    }

    private static void Ascending(int[] p, int layer, int head, string what)
    {
        for (int k = 1; k < p.Length; k++)
            if (p[k] <= p[k - 1]) throw new InvalidRequestException($"layer {layer} head {head}: {what} positions are not ascending");
    }
}
