namespace Cluster.Engine.Sampling;

/// <summary>Divides the logits by the temperature: softmax(logits / T) flattens the distribution for
/// T &gt; 1 and sharpens it for T &lt; 1 (T = 0, greedy, is handled by choosing the greedy chain).</summary>
public sealed class TemperatureSampler(float temperature) : ISampler
{
    public string Name => $"temperature({temperature})";
    public bool ChangesGreedy => false;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (temperature == 1f) return;
        var logits = candidates.LogitSpan;
        for (int i = 0; i < logits.Length; i++) logits[i] /= temperature;
    }
}
