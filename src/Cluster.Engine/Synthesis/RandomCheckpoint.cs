using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;
using Cluster.Engine.Model;

namespace Cluster.Engine.Synthesis;

/// <summary>
/// Writes a random-weight Hugging Face checkpoint of a given shape: linear weights ~ N(0, 0.02) as in
/// Hugging Face's initializer_range, norm weights 1 ± 0.1 (not exactly 1, so a test would notice a
/// norm applied to the wrong place). Deterministic per (seed, tensor name).
/// </summary>
public static class RandomCheckpoint
{
    public static void Write(string folder, LlamaConfig config, WeightType type, int seed = 0, Action<int, int>? progress = null)
    {
        HuggingFaceWriter.Write(folder, config with { RopeLayout = RopeLayout.Halves }, (name, shape, dst) =>
        {
            var rng = new Random(unchecked(seed * 16777619 ^ StableHash(name))); // not HashCode.Combine: it is randomized per process
            if (shape.Length == 1)
                for (int i = 0; i < dst.Length; i++) dst[i] = 1f + 0.2f * (rng.NextSingle() - 0.5f);
            else
                FillNormal(dst, rng, 0.02f);
        }, type, progress);
        WriteByteTokenizerIfFits(folder, config);
    }

    /// <summary>Gaussian values by Box-Muller, two per pair of uniforms.</summary>
    private static void FillNormal(Span<float> dst, Random rng, float std)
    {
        for (int i = 0; i < dst.Length; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1)) * std;
            dst[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < dst.Length) dst[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
    }

    private static int StableHash(string s)
    {
        unchecked
        {
            int h = (int)2166136261;
            foreach (var ch in s) h = (h ^ ch) * 16777619;
            return h;
        }
    }

    /// <summary>
    /// A llama2.c tokenizer.bin of byte pieces (ids 0-2 &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;; id b+3 is byte b;
    /// ids past 258 are unused "&lt;extra_N&gt;" pieces that no text encodes to), so that a random
    /// model of any real shape takes text: the embedded default, and the synthetic benchmark models.
    /// </summary>
    private static void WriteByteTokenizerIfFits(string folder, LlamaConfig config)
    {
        if (config.VocabSize < 259) return;
        using var w = new BinaryWriter(File.Create(Path.Combine(folder, "tokenizer.bin")));
        w.Write(16); // max token length
        var bytePieces = new[] { "<unk>", "\n<s>\n", "\n</s>\n" }.Concat(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>"));
        foreach (var piece in bytePieces.Concat(Enumerable.Range(259, config.VocabSize - 259).Select(i => $"<extra_{i}>")))
        {
            var bytes = System.Text.Encoding.UTF8.GetBytes(piece);
            w.Write(0f);
            w.Write(bytes.Length);
            w.Write(bytes);
        }
    }
}
