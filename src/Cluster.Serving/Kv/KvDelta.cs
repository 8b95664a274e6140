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

/// <summary>Computes deltas between captured caches (decode) and applies them onto stored blocks (cache manager).</summary>
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
            var p = previous.Layers.FirstOrDefault(b => b.Index == n.Layer) ?? throw new ArgumentException($"no previous block for layer {n.Layer}");
            if (p.Positions.Length != n.Positions.Length) throw new ArgumentException($"layer {n.Layer}: {p.Positions.Length} heads before, {n.Positions.Length} now");
            var d = KvDigest.Of(n, headDim);
            digests.Add(d);
            int heads = n.Positions.Length;
            var sentPositions = new int[heads][];
            var removed = new int[heads][];
            var sentRows = new List<(int Head, int Row)>();
            int pOffset = 0, nOffset = 0; // first row of the head in the block's arrays
            for (int h = 0; h < heads; h++)
            {
                var pp = p.Positions[h];
                var np = n.Positions[h];
                var sent = new List<int>();
                var gone = new List<int>();
                int i = 0, j = 0;
                while (i < pp.Length || j < np.Length)
                {
                    if (j == np.Length || (i < pp.Length && pp[i] < np[j])) gone.Add(pp[i++]);
                    else if (i == pp.Length || np[j] < pp[i]) { sent.Add(np[j]); sentRows.Add((h, nOffset + j)); j++; }
                    else
                    {
                        int a = pOffset + i, b = nOffset + j;
                        if (p.Keys[a] != d.Keys[b] || p.Values[a] != d.Values[b]) { sent.Add(np[j]); sentRows.Add((h, b)); }
                        i++;
                        j++;
                    }
                }
                sentPositions[h] = [.. sent];
                removed[h] = [.. gone];
                pOffset += pp.Length;
                nOffset += np.Length;
            }
            var keys = new float[sentRows.Count * headDim];
            var values = new float[sentRows.Count * headDim];
            for (int r = 0; r < sentRows.Count; r++)
            {
                n.Keys.AsSpan(sentRows[r].Row * headDim, headDim).CopyTo(keys.AsSpan(r * headDim));
                n.Values.AsSpan(sentRows[r].Row * headDim, headDim).CopyTo(values.AsSpan(r * headDim));
            }
            result.Add(new KvLayerDelta(n.Layer, new KvLayerBlock(n.Layer, sentPositions, keys, values), removed));
        }
        nextDigest = KvDigest.Of(digests);
        return result;
    }

    /// <summary>
    /// The whole cache a delta describes: <paramref name="baseLayers"/> (a stored version, one block per
    /// layer) with each head's <c>removed</c> tokens dropped, and the sent tokens added or replacing the
    /// base's token at the same position. Throws <see cref="InvalidRequestException"/> for a delta that
    /// does not fit the base (a removed token it lacks, positions out of order, a layer missing or twice).
    /// </summary>
    public static WireKvBlock[] Apply(IReadOnlyList<WireKvBlock> baseLayers, IReadOnlyList<(WireKvBlock Sent, int[][] Removed)> deltas, int headDim)
    {
        var result = new WireKvBlock[baseLayers.Count];
        foreach (var (sent, removed) in deltas)
        {
            if ((uint)sent.Layer >= result.Length || result[sent.Layer] is not null) throw new InvalidRequestException($"delta for layer {sent.Layer} is out of range or sent twice");
            var b = baseLayers.FirstOrDefault(x => x.Layer == sent.Layer) ?? throw new InvalidRequestException($"the base has no layer {sent.Layer}");
            if (sent.Precision != b.Precision) throw new InvalidRequestException($"layer {sent.Layer}: delta in {sent.Precision.Name()}, base in {b.Precision.Name()}");
            int heads = b.Positions.Length;
            if (sent.Positions.Length != heads || removed.Length != heads) throw new InvalidRequestException($"layer {sent.Layer}: delta for {sent.Positions.Length} heads ({removed.Length} removed lists), the base has {heads}");
            int row = headDim * sent.Precision.Bytes();
            var positions = new int[heads][];
            // First the merge (which row of which source each kept token takes), then one exact copy.
            var rows = new List<(bool FromSent, int Row)>(b.Positions.Sum(p => p.Length) + sent.Positions.Sum(p => p.Length));
            int bRow = 0, sRow = 0;
            for (int h = 0; h < heads; h++)
            {
                var bp = b.Positions[h];
                var sp = sent.Positions[h];
                var rp = removed[h];
                for (int k = 1; k < bp.Length; k++)
                    if (bp[k] <= bp[k - 1]) throw new KvBaseMissingException($"layer {sent.Layer} head {h}: the base's positions are not ascending");
                Ascending(sp, sent.Layer, h, "sent");
                Ascending(rp, sent.Layer, h, "removed");
                var kept = new List<int>(bp.Length + sp.Length);
                int i = 0, j = 0, r = 0;
                while (i < bp.Length || j < sp.Length)
                {
                    bool fromBase = j == sp.Length || (i < bp.Length && bp[i] < sp[j]);
                    if (fromBase)
                    {
                        if (r < rp.Length && rp[r] == bp[i]) { r++; i++; continue; } // gone
                        if (r < rp.Length && rp[r] < bp[i]) throw new InvalidRequestException($"layer {sent.Layer} head {h}: removed position {rp[r]} is not in the base");
                        kept.Add(bp[i]);
                        rows.Add((false, bRow + i));
                        i++;
                    }
                    else
                    {
                        if (i < bp.Length && bp[i] == sp[j])
                        {
                            if (r < rp.Length && rp[r] == bp[i]) throw new InvalidRequestException($"layer {sent.Layer} head {h}: position {sp[j]} both removed and sent");
                            i++; // replaced
                        }
                        kept.Add(sp[j]);
                        rows.Add((true, sRow + j));
                        j++;
                    }
                }
                if (r != rp.Length) throw new InvalidRequestException($"layer {sent.Layer} head {h}: removed position {rp[r]} is not in the base");
                positions[h] = [.. kept];
                bRow += bp.Length;
                sRow += sp.Length;
            }
            var keys = new byte[(long)rows.Count * row];
            var values = new byte[(long)rows.Count * row];
            for (int k = 0; k < rows.Count;)
            {
                // A run of consecutive rows of one source is one copy (a dense delta is two runs per head).
                var (fromSent, first) = rows[k];
                int n = 1;
                while (k + n < rows.Count && rows[k + n].FromSent == fromSent && rows[k + n].Row == first + n) n++;
                var src = fromSent ? sent : b;
                src.Keys.AsSpan(first * row, n * row).CopyTo(keys.AsSpan(k * row));
                src.Values.AsSpan(first * row, n * row).CopyTo(values.AsSpan(k * row));
                k += n;
            }
            result[sent.Layer] = new WireKvBlock(sent.Layer, positions, sent.Precision, keys, values);
        }
        for (int l = 0; l < result.Length; l++)
            if (result[l] is null) throw new InvalidRequestException($"the delta has no block for layer {l} (send an empty one for an unchanged layer)");
        return result;
    }

    private static void Ascending(int[] p, int layer, int head, string what)
    {
        for (int k = 1; k < p.Length; k++)
            if (p[k] <= p[k - 1]) throw new InvalidRequestException($"layer {layer} head {head}: {what} positions are not ascending");
    }
}
