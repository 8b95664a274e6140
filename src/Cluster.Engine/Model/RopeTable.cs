namespace Cluster.Engine.Model;

/// <summary>How a head's dimensions are paired for rotation.</summary>
public enum RopeLayout
{
    /// <summary>Pairs (x[2i], x[2i+1]): Meta's and llama2.c's layout.</summary>
    Interleaved,

    /// <summary>Pairs (x[i], x[i + d/2]): Hugging Face's rotate_half layout, whose q/k weights are
    /// permuted from Meta's so that both give the same attention scores.</summary>
    Halves,
}

/// <summary>
/// Rotary position embedding (Su et al. 2021): pair i of a head turns by angle position * invFreq[i],
/// invFreq[i] = theta^(-2i/d), optionally rescaled by Llama 3's frequency-dependent rule.
/// </summary>
public sealed class RopeTable
{
    public RopeTable(int headDim, double theta, RopeLayout layout, Llama3RopeScaling? scaling = null)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"RoPE needs an even head dimension, got {headDim}", nameof(headDim));
        HeadDim = headDim;
        Layout = layout;
        InverseFrequencies = new double[headDim / 2];
        for (int i = 0; i < headDim / 2; i++)
        {
            var f = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
            InverseFrequencies[i] = scaling is null ? f : scaling.Rescale(f);
        }
    }

    /// <summary>A table from explicit per-pair frequencies (e.g. sent with a KV block), [headDim/2].</summary>
    public RopeTable(double[] inverseFrequencies, RopeLayout layout)
    {
        if (inverseFrequencies.Length == 0) throw new ArgumentException("no RoPE frequencies", nameof(inverseFrequencies));
        HeadDim = inverseFrequencies.Length * 2;
        Layout = layout;
        InverseFrequencies = inverseFrequencies;
    }

    public int HeadDim { get; }
    public RopeLayout Layout { get; }

    /// <summary>Radians per position of each pair, [headDim/2].</summary>
    public double[] InverseFrequencies { get; }

    /// <summary>Fills cos/sin [headDim/2] for one position (double angles: exact at large positions).</summary>
    public void Angles(int position, Span<float> cos, Span<float> sin)
    {
        for (int i = 0; i < InverseFrequencies.Length; i++)
        {
            var a = position * InverseFrequencies[i];
            cos[i] = (float)Math.Cos(a);
            sin[i] = (float)Math.Sin(a);
        }
    }
}

/// <summary>
/// Llama 3.1's RoPE scaling ("rope_type": "llama3"): wavelengths longer than
/// original_max_position / low_freq_factor are slowed by <c>factor</c>, shorter than
/// original_max_position / high_freq_factor are kept, and the band between is interpolated smoothly
/// (as Hugging Face's _compute_llama3_parameters does).
/// </summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions)
{
    public double Rescale(double invFreq)
    {
        var wavelength = 2 * Math.PI / invFreq;
        var lowFreqWavelength = OriginalMaxPositions / LowFreqFactor;
        var highFreqWavelength = OriginalMaxPositions / HighFreqFactor;
        if (wavelength < highFreqWavelength) return invFreq;
        if (wavelength > lowFreqWavelength) return invFreq / Factor;
        var smooth = (OriginalMaxPositions / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
        return (1 - smooth) * invFreq / Factor + smooth * invFreq;
    }
}
