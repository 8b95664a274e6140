using Cluster.Engine.Sampling;
using Cluster.Engine.Tokenizers;

namespace Cluster.Engine.Generation;

/// <summary>
/// Turns one output's tokens into the text to stream: complete UTF-8 characters only
/// (<see cref="IncrementalDecoder"/>), then the stop-string matcher, which holds back what could be
/// the start of a stop string. Without a tokenizer there is no text (and no stop strings).
/// </summary>
internal sealed class OutputText
{
    private readonly IncrementalDecoder? _decoder;
    private readonly StopStringMatcher _stops;

    /// <param name="context">Tokens before the output (the prompt), so the first piece decodes in context.</param>
    public OutputText(ITokenizer? tokenizer, IEnumerable<int> context, IReadOnlyList<string> stops)
    {
        _stops = new StopStringMatcher(stops);
        if (tokenizer is null) return;
        _decoder = new IncrementalDecoder(tokenizer);
        foreach (var id in context) _decoder.Push(id);
    }

    /// <summary>Adds a token; returns the text now safe to show. <paramref name="stopped"/>: a stop string completed.</summary>
    public string Push(int id, bool canStop, out bool stopped)
    {
        stopped = false;
        if (_decoder is null) return "";
        return _stops.Push(_decoder.Push(id), canStop, out stopped);
    }

    /// <summary>The rest of the text at the end of an output that no stop string ended.</summary>
    public string Flush()
    {
        if (_decoder is null) return "";
        return _stops.Push(_decoder.Flush(), canStop: false, out _) + _stops.Flush();
    }
}
