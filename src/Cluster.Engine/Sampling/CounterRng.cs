namespace Cluster.Engine.Sampling;

/// <summary>
/// A counter-based random source: the uniform for (seed, stream, step) is a hash of the three, with no
/// state carried from one draw to the next. That is what makes a seeded stream reproducible when it
/// is resumed at step i on another worker: nothing before step i needs replaying. The hash is the
/// SplitMix64 finalizer (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014), applied once per input word.
/// </summary>
public static class CounterRng
{
    /// <summary>A uniform double in [0, 1) with 53 random bits.</summary>
    public static double Uniform(long seed, int stream, int step)
    {
        ulong h = Mix((ulong)seed);
        h = Mix(h ^ (uint)stream);
        h = Mix(h ^ (uint)step);
        return (h >> 11) * (1.0 / (1UL << 53));
    }

    private static ulong Mix(ulong x)
    {
        unchecked
        {
            ulong z = x + 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
