namespace Cluster.Engine.Sampling;

/// <summary>
/// Draws a candidate from softmax of the current logits by inverting the cumulative distribution
/// at this step's uniform, which comes from <see cref="SamplingState.Uniform"/>: the draw depends
/// only on (seed, stream, step) and the candidates.
/// </summary>
public sealed class DistributionSampler : ISampler
{
    private double[] _probs = [];

    public string Name => "dist";
    public bool ChangesGreedy => true;

    public void Apply(TokenCandidates candidates, SamplingState state)
    {
        if (_probs.Length < candidates.Count) _probs = new double[candidates.Ids.Length];
        candidates.Softmax(_probs);
        double u = state.Uniform();
        double cumulative = 0;
        int lastPossible = 0;
        for (int i = 0; i < candidates.Count; i++)
        {
            if (_probs[i] <= 0) continue; // banned (-infinity) tokens are never drawn
            lastPossible = i;
            cumulative += _probs[i];
            if (u < cumulative)
            {
                candidates.Selected = candidates.Ids[i];
                return;
            }
        }
        candidates.Selected = candidates.Ids[lastPossible]; // u beyond the rounded total
    }
}
