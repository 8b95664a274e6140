using Cluster.Engine.Kernels;
using Cluster.Engine.KvCache;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Kernels;

/// <summary>
/// KV precision conversion (issue 17) against references that share no code with it: a table of bit
/// patterns worked out by hand, torch's fp32-to-bfloat16 and numpy's fp32-to-float16 casts (both round
/// to nearest even), and fp32 kept bit for bit.
/// </summary>
public sealed class KvConvertTests
{
    /// <summary>Arbitrary bit patterns (every exponent, NaNs, infinities, subnormals) plus the edge
    /// cases, an odd count so that the vector loops' scalar tails run too.</summary>
    private static float[] Samples()
    {
        var rng = new Random(17);
        var bits = new List<uint>();
        for (int i = 0; i < 4001; i++) bits.Add((uint)rng.NextInt64(0, 1L << 32));
        // Values in KV's usual range, where rounding decides most.
        for (int i = 0; i < 2000; i++) bits.Add(BitConverter.SingleToUInt32Bits((float)(rng.NextDouble() * 8 - 4)));
        bits.AddRange([0x3f808000, 0x3f818000, 0x3f80_8001, 0x3f80_7fff, 0xbf818000, 0x7f7fffff, 0xff7fffff, 0x00008000, 0x00018000,
            0x7f800000, 0xff800000, 0x80000000, 0, 0x7fc00000, 0x7f800001, 0xffc12345, 0x477ff000, 0x477fe000, 0x33000000, 0x33000001, 0x387fc000]);
        return bits.Select(BitConverter.UInt32BitsToSingle).ToArray();
    }

    private static ushort[] Encode16(float[] x, KvPrecision p)
    {
        var bytes = new byte[x.Length * 2];
        KvConvert.Encode(x, bytes, p);
        return Enumerable.Range(0, x.Length).Select(i => BitConverter.ToUInt16(bytes, 2 * i)).ToArray();
    }

    [Theory]
    // fp32 bits -> bf16 bits, rounded to nearest even by hand: the low 16 bits are the remainder.
    [InlineData(0x3f800000u, (ushort)0x3f80)]   // 1.0: exact
    [InlineData(0x3f808000u, (ushort)0x3f80)]   // 1 + 2^-8: a tie, 0x3f80 is even: down
    [InlineData(0x3f818000u, (ushort)0x3f82)]   // a tie above odd 0x3f81: up to even
    [InlineData(0x3f808001u, (ushort)0x3f81)]   // just past the tie: up
    [InlineData(0x3f807fffu, (ushort)0x3f80)]   // just below the tie: down
    [InlineData(0xbf818000u, (ushort)0xbf82)]   // negative: same on the magnitude
    [InlineData(0x7f7fffffu, (ushort)0x7f80)]   // largest float rounds up to +inf
    [InlineData(0x80000000u, (ushort)0x8000)]   // -0 stays -0
    [InlineData(0x00018000u, (ushort)0x0002)]   // subnormal tie above odd: up
    [InlineData(0x7f800000u, (ushort)0x7f80)]   // +inf
    [InlineData(0x7f800001u, (ushort)0x7fc0)]   // signalling NaN whose payload is all in the low bits: stays a (quiet) NaN, not inf
    public void Bf16_rounds_to_nearest_even_by_the_table(uint fp32, ushort bf16)
    {
        // 33 copies: the vector loop and the scalar tail both see it.
        var x = Enumerable.Repeat(BitConverter.UInt32BitsToSingle(fp32), 33).ToArray();
        Assert.All(Encode16(x, KvPrecision.Bf16), b => Assert.Equal(bf16, b));
    }

    [Theory]
    [InlineData(0x3f800000u, (ushort)0x3c00)]   // 1.0
    [InlineData(0x3f801000u, (ushort)0x3c00)]   // 1 + 2^-11: a tie, 0x3c00 even: down
    [InlineData(0x3f803000u, (ushort)0x3c02)]   // 1 + 3*2^-11: a tie above odd 0x3c01: up
    [InlineData(0x477fe000u, (ushort)0x7bff)]   // 65504, the largest half
    [InlineData(0x477ff000u, (ushort)0x7c00)]   // 65520: the tie past the largest rounds to inf
    [InlineData(0x33800000u, (ushort)0x0001)]   // 2^-24: the smallest subnormal half
    [InlineData(0x33000000u, (ushort)0x0000)]   // 2^-25: a tie with zero, rounds to even zero
    public void Fp16_rounds_to_nearest_even_by_the_table(uint fp32, ushort fp16)
    {
        var x = Enumerable.Repeat(BitConverter.UInt32BitsToSingle(fp32), 33).ToArray();
        Assert.All(Encode16(x, KvPrecision.Fp16), b => Assert.Equal(fp16, b));
    }

    [Fact]
    public void Fp32_is_kept_bit_for_bit()
    {
        var x = Samples();
        var bytes = new byte[x.Length * 4];
        KvConvert.Encode(x, bytes, KvPrecision.Fp32);
        var back = new float[x.Length];
        KvConvert.Decode(bytes, back, KvPrecision.Fp32);
        Assert.Equal(x.Select(BitConverter.SingleToUInt32Bits), back.Select(BitConverter.SingleToUInt32Bits));
        var copy = (float[])x.Clone();
        KvConvert.Round(copy, KvPrecision.Fp32);
        Assert.Equal(x.Select(BitConverter.SingleToUInt32Bits), copy.Select(BitConverter.SingleToUInt32Bits));
    }

    [SkippableTheory]
    [InlineData("bf16")]
    [InlineData("fp16")]
    public void Matches_torch_and_numpy_and_widens_exactly(string dtype)
    {
        if (!ExternalTools.EnsurePythonModule(dtype == "bf16" ? "torch" : "numpy")) return;
        var p = KvPrecisions.Parse(dtype);
        var x = Samples();
        var ours = Encode16(x, p);
        var reference = Reference(x, dtype);
        for (int i = 0; i < x.Length; i++)
        {
            if (float.IsNaN(x[i])) Assert.True(IsNaN16(ours[i], p), $"{i}: NaN {BitConverter.SingleToUInt32Bits(x[i]):x8} became {ours[i]:x4}");
            else Assert.True(reference[i] == ours[i], $"{i}: {BitConverter.SingleToUInt32Bits(x[i]):x8} -> ours {ours[i]:x4}, reference {reference[i]:x4}");
        }

        // Widening is exact (every 16-bit value is an fp32), and rounding in place is encode then widen.
        var bytes = ours.SelectMany(BitConverter.GetBytes).ToArray();
        var wide = new float[x.Length];
        KvConvert.Decode(bytes, wide, p);
        var rounded = (float[])x.Clone();
        KvConvert.Round(rounded, p);
        for (int i = 0; i < x.Length; i++)
        {
            double exact = p == KvPrecision.Bf16 ? BitConverter.UInt32BitsToSingle((uint)ours[i] << 16) : (double)BitConverter.UInt16BitsToHalf(ours[i]);
            Assert.True(wide[i].Equals((float)exact), $"{i}: {ours[i]:x4} widened to {wide[i]}, expected {exact}");
            Assert.True(rounded[i].Equals(wide[i]), $"{i}: rounded in place to {rounded[i]}, encode+decode gave {wide[i]}");
        }
    }

    private static bool IsNaN16(ushort b, KvPrecision p) => p == KvPrecision.Bf16
        ? (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0
        : (b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0;

    /// <summary>torch (bf16) or numpy (fp16) casting the same fp32 bit patterns, as 16-bit patterns.</summary>
    private static ushort[] Reference(float[] x, string dtype)
    {
        var input = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(input, x.SelectMany(f => BitConverter.GetBytes(f)).ToArray());
            var script = dtype == "bf16"
                ? "import sys, torch, numpy as np\nx = torch.from_numpy(np.fromfile(sys.argv[1], dtype='<f4'))\nprint(' '.join('%d' % (v & 0xffff) for v in x.to(torch.bfloat16).view(torch.int16).tolist()))"
                : "import sys, numpy as np\nx = np.fromfile(sys.argv[1], dtype='<f4')\nwith np.errstate(all='ignore'):\n  print(' '.join(str(v) for v in x.astype(np.float16).view(np.uint16).tolist()))";
            var (code, stdout, stderr) = ExternalTools.Run(ExternalTools.Python, ["-c", script, input], TimeSpan.FromMinutes(2));
            Assert.True(code == 0, stderr);
            var result = stdout.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ushort.Parse).ToArray();
            Assert.Equal(x.Length, result.Length);
            return result;
        }
        finally { File.Delete(input); }
    }
}
