namespace Cluster.Engine.Tests.Sampling;

/// <summary>Pearson's chi-square goodness-of-fit statistic and its critical values.</summary>
internal static class ChiSquare
{
    /// <summary>sum (observed - expected)^2 / expected over the categories.</summary>
    public static double Statistic(IReadOnlyList<int> observed, IReadOnlyList<double> probabilities)
    {
        long n = observed.Sum();
        double stat = 0;
        for (int i = 0; i < observed.Count; i++)
        {
            double expected = n * probabilities[i];
            stat += (observed[i] - expected) * (observed[i] - expected) / expected;
        }
        return stat;
    }

    /// <summary>The chi-square quantile at upper tail probability 0.001 (standard tables), by degrees of freedom.</summary>
    public static double Critical001(int degreesOfFreedom) => degreesOfFreedom switch
    {
        1 => 10.828, 2 => 13.816, 3 => 16.266, 4 => 18.467, 5 => 20.515, 6 => 22.458, 7 => 24.322,
        _ => throw new ArgumentOutOfRangeException(nameof(degreesOfFreedom)),
    };

    public static double[] Softmax(IReadOnlyList<float> logits, double temperature)
    {
        double max = logits.Max();
        var e = logits.Select(l => Math.Exp((l - max) / temperature)).ToArray();
        double sum = e.Sum();
        return e.Select(x => x / sum).ToArray();
    }
}
