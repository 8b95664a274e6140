namespace Cluster.Engine.Sampling;

/// <summary>
/// What the samplers of one output sequence need to know besides the logits: the prompt and the
/// tokens generated so far (for the penalties), the step, and the coordinates of its random draws.
/// Rebuilt from (prompt, generated tokens, seed, index) alone, so a stream can resume anywhere.
/// </summary>
public sealed class SamplingState
{
    private readonly int[] _generatedCounts;
    private readonly bool[] _seen; // in the prompt or generated: the set the repetition penalty covers
    private readonly List<int> _generated = [];
    private readonly List<int> _distinctGenerated = [];
    private readonly List<int> _distinctSeen = [];

    public SamplingState(int vocabSize, IEnumerable<int> prompt, long seed, int stream = 0)
    {
        _generatedCounts = new int[vocabSize];
        _seen = new bool[vocabSize];
        Seed = seed;
        Stream = stream;
        foreach (var id in prompt) MarkSeen(id);
    }

    public long Seed { get; }

    /// <summary>Which of the request's n outputs this is: each gets its own random stream.</summary>
    public int Stream { get; }

    /// <summary>Tokens generated so far: the index of the next draw.</summary>
    public int Step => _generated.Count;

    public IReadOnlyList<int> Generated => _generated;

    /// <summary>Times <paramref name="id"/> was generated (not counting the prompt).</summary>
    public int GeneratedCount(int id) => _generatedCounts[id];

    /// <summary>Whether <paramref name="id"/> is in the prompt or was generated.</summary>
    public bool Seen(int id) => _seen[id];

    /// <summary>Distinct tokens generated so far, in order of first appearance.</summary>
    public IReadOnlyList<int> DistinctGenerated => _distinctGenerated;

    /// <summary>Distinct tokens of prompt and output, in order of first appearance.</summary>
    public IReadOnlyList<int> DistinctSeen => _distinctSeen;

    /// <summary>The uniform in [0, 1) for this step's draw.</summary>
    public double Uniform() => CounterRng.Uniform(Seed, Stream, Step);

    /// <summary>Records the token chosen at this step.</summary>
    public void Accept(int id)
    {
        _generated.Add(id);
        if (_generatedCounts[id]++ == 0) _distinctGenerated.Add(id);
        MarkSeen(id);
    }

    private void MarkSeen(int id)
    {
        if (_seen[id]) return;
        _seen[id] = true;
        _distinctSeen.Add(id);
    }

    public SamplingState Clone()
    {
        var copy = new SamplingState(_seen.Length, [], Seed, Stream);
        _seen.CopyTo(copy._seen, 0);
        _generatedCounts.CopyTo(copy._generatedCounts, 0);
        copy._generated.AddRange(_generated);
        copy._distinctGenerated.AddRange(_distinctGenerated);
        copy._distinctSeen.AddRange(_distinctSeen);
        return copy;
    }
}
