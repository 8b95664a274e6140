namespace Cluster.Engine.Sampling;

/// <summary>
/// Finds stop strings in streamed text, across token boundaries, without ever releasing text that
/// could turn out to belong to one: the longest tail of the pending text that is a prefix of some
/// stop string is held back until the next piece settles it. Because every such tail is held, a
/// stop string can only start inside the held text, so only held + new text is searched.
/// </summary>
public sealed class StopStringMatcher(IReadOnlyList<string> stops)
{
    private string _held = "";

    /// <summary>Text held back because it may be the start of a stop string.</summary>
    public string Held => _held;

    /// <summary>
    /// Adds <paramref name="piece"/>. Returns the text that is now safe to show; <paramref name="stopped"/>
    /// tells whether a stop string completed, in which case the returned text ends just before it
    /// and the stop string and anything after it are dropped. With <paramref name="canStop"/> false
    /// (before min_tokens) completed stop strings are released as ordinary text.
    /// </summary>
    public string Push(string piece, bool canStop, out bool stopped)
    {
        stopped = false;
        if (stops.Count == 0) return piece;
        var text = _held + piece;
        if (canStop)
        {
            int first = -1;
            foreach (var s in stops)
            {
                int at = text.IndexOf(s, StringComparison.Ordinal);
                if (at >= 0 && (first < 0 || at < first)) first = at;
            }
            if (first >= 0)
            {
                stopped = true;
                _held = "";
                return text[..first];
            }
        }
        int hold = LongestTailThatStartsAStop(text, canStop);
        _held = text[^hold..];
        return text[..^hold];
    }

    /// <summary>Releases the held text at the end of the output (no stop string completed).</summary>
    public string Flush()
    {
        var rest = _held;
        _held = "";
        return rest;
    }

    private int LongestTailThatStartsAStop(string text, bool canStop)
    {
        int best = 0;
        foreach (var s in stops)
        {
            // A whole stop string is held only while it could still stop the output: before
            // min_tokens it passes as text, but a longer stop string may still be in progress.
            int longest = Math.Min(text.Length, canStop ? s.Length : s.Length - 1);
            for (int len = longest; len > best; len--)
                if (string.CompareOrdinal(text, text.Length - len, s, 0, len) == 0) { best = len; break; }
        }
        return best;
    }
}
