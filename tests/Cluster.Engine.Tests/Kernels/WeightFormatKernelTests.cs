using Cluster.Engine.Kernels;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Kernels;

/// <summary>
/// The format kernels against a float64 product of the dequantized weights (an independent
/// reference: it shares only the dequantization, which GgufModelTests checks against llama.cpp),
/// and their paths against each other: AVX-VNNI equals the managed path bit for bit, and one
/// activation row gives the same bits alone as inside a batch.
/// </summary>
public sealed unsafe class WeightFormatKernelTests
{
    private static float[] Random(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();
    }

    /// <summary>y = x · W^T on the backend, W converted to <paramref name="type"/>.</summary>
    private static float[] MatMul(CpuBackend backend, WeightStore store, float[] w, float[] x, int rows, int k, int n, WeightType type, out float[] dequantized)
    {
        fixed (float* wp = w)
        {
            var data = store.Convert(WeightData.FromFloats(wp, w.Length, k), type);
            dequantized = new float[w.Length];
            data.CopyToFloat32(dequantized);
            var wt = backend.LoadWeights(data);
            Assert.Equal(type, wt.Format);
            using var xt = backend.Allocate(x.Length);
            using var yt = backend.Allocate((long)rows * n);
            backend.CopyFromHost(x, xt);
            backend.MatMul(xt, wt, yt, rows, k, n);
            var y = new float[rows * n];
            backend.CopyToHost(yt, 0, y);
            return y;
        }
    }

    private static double[] Reference(float[] w, float[] x, int rows, int k, int n)
    {
        var y = new double[rows * n];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int i = 0; i < k; i++) s += (double)x[r * k + i] * w[j * k + i];
                y[r * n + j] = s;
            }
        return y;
    }

    [Theory]
    [InlineData(WeightType.BF16, 1, 576, 37, 1e-5)]
    [InlineData(WeightType.BF16, 9, 200, 70, 1e-5)]
    [InlineData(WeightType.F16, 1, 96, 33, 1e-5)]
    [InlineData(WeightType.F16, 6, 130, 20, 1e-5)]
    [InlineData(WeightType.F32, 5, 64, 20, 1e-5)]
    // Q8_0 also quantizes the activations (per block of 32): about 0.4% of a block's max per value.
    [InlineData(WeightType.Q8_0, 1, 576, 37, 2e-2)]
    [InlineData(WeightType.Q8_0, 7, 172, 66, 2e-2)]
    [InlineData(WeightType.Q8_0, 40, 96, 50, 2e-2)]
    public void Matches_a_float64_product_of_the_dequantized_weights(WeightType type, int rows, int k, int n, double tolerance)
    {
        var w = Random(n * k, 1);
        var x = Random(rows * k, 2);
        foreach (var blas in new[] { true, false })
        {
            using var backend = new CpuBackend(threads: 2, useOpenBlas: blas);
            using var store = new WeightStore();
            var y = MatMul(backend, store, w, x, rows, k, n, type, out var dq);
            var reference = Reference(dq, x, rows, k, n);
            double scale = Math.Sqrt(k) / 3; // std of a dot of k products of U(-1,1) values
            for (int i = 0; i < y.Length; i++)
                Assert.True(Math.Abs(y[i] - reference[i]) <= tolerance * scale, $"{type} blas={blas} [{i}]: {y[i]} vs {reference[i]}");
        }
    }

    [Theory]
    [InlineData(WeightType.F32, 1, 576, 52)]
    [InlineData(WeightType.F32, 16, 172, 40)]
    [InlineData(WeightType.BF16, 1, 576, 52)]
    [InlineData(WeightType.BF16, 1, 172, 13)]
    [InlineData(WeightType.BF16, 5, 200, 70)]
    [InlineData(WeightType.BF16, 16, 576, 52)]
    [InlineData(WeightType.BF16, 32, 172, 40)]
    public void Decode_rows_equal_a_scalar_emulation_of_their_fixed_summation_order(WeightType type, int rows, int k, int n)
    {
        // fp32 and bf16 rows up to 32 go through register tiles whose every output is one 8-lane FMA chain,
        // lanes summed (0+2)+(1+3) of (lower+upper), then the k % 8 tail: emulated here one scalar at a time,
        // from the dequantized weights, so any other order or a wrong widening shows as different bits.
        var w = Random(n * k, 5);
        var x = Random(rows * k, 6, 3f);
        using var backend = new CpuBackend(threads: 2);
        using var store = new WeightStore();
        var y = MatMul(backend, store, w, x, rows, k, n, type, out var dq);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                var lanes = new float[8];
                int kk = 0;
                for (; kk + 8 <= k; kk += 8)
                    for (int l = 0; l < 8; l++) lanes[l] = MathF.FusedMultiplyAdd(x[r * k + kk + l], dq[j * k + kk + l], lanes[l]);
                float h0 = lanes[0] + lanes[4], h1 = lanes[1] + lanes[5], h2 = lanes[2] + lanes[6], h3 = lanes[3] + lanes[7];
                float s = (h0 + h2) + (h1 + h3);
                for (; kk < k; kk++) s = MathF.FusedMultiplyAdd(x[r * k + kk], dq[j * k + kk], s);
                Assert.True(s == y[r * n + j], $"{type} row {r} output {j}: {y[r * n + j]} vs emulated {s}");
            }
    }

    [Theory]
    [InlineData(1, 576, 64)]
    [InlineData(16, 576, 40)]
    [InlineData(7, 172, 66)]
    [InlineData(130, 64, 9)]
    [InlineData(4, 96, 8)]
    [InlineData(5, 64, 20)]
    [InlineData(32, 576, 52)]
    public void Q8_0_int8_paths_are_bit_identical_and_rows_do_not_depend_on_the_batch(int rows, int k, int n)
    {
        var w = Random(n * k, 3);
        var x = Random(rows * k, 4, 5f);
        // Every row count takes the int8 kernels, prefill included.
        using var backend = new CpuBackend(threads: 2);
        using var store = new WeightStore();
        bool vnni = Q8Interleaved.UseVnni, avx2 = Q8Interleaved.UseAvx2;
        try
        {
            var results = new List<(string Path, float[] Y)>();
            if (vnni) results.Add(("vnni", MatMul(backend, store, w, x, rows, k, n, WeightType.Q8_0, out _)));
            Q8Interleaved.UseVnni = false;
            if (avx2) results.Add(("avx2", MatMul(backend, store, w, x, rows, k, n, WeightType.Q8_0, out _)));
            Q8Interleaved.UseAvx2 = false;
            var managed = MatMul(backend, store, w, x, rows, k, n, WeightType.Q8_0, out _);
            foreach (var (path, y) in results) Assert.True(managed.AsSpan().SequenceEqual(y), $"{path} differs from the managed path");
            Q8Interleaved.UseVnni = vnni;
            Q8Interleaved.UseAvx2 = avx2;
            var fast = results.Count > 0 ? results[0].Y : managed;
            for (int r = 0; r < rows; r += Math.Max(1, rows / 5))
            {
                var alone = MatMul(backend, store, w, x[(r * k)..((r + 1) * k)], 1, k, n, WeightType.Q8_0, out _);
                Assert.Equal(fast[(r * n)..((r + 1) * n)], alone);
            }
        }
        finally
        {
            Q8Interleaved.UseVnni = vnni;
            Q8Interleaved.UseAvx2 = avx2;
        }
    }

    [Theory]
    [InlineData(1, 576, 64)]
    [InlineData(5, 172, 40)]
    [InlineData(33, 96, 20)]
    public void Q8_0_outputs_equal_a_scalar_emulation_from_ggml_rows(int rows, int k, int n)
    {
        // Independent of the repacking: from the ggml Q8_0 rows the store wrote and the activations
        // quantized per block of 32, each block's exact integer Σ w·x, then acc = fma(Σ, dw·dx, acc)
        // block by block. A misplaced byte, a wrong scale or another order shows as different bits.
        var w = Random(n * k, 11);
        var x = Random(rows * k, 12, 4f);
        using var backend = new CpuBackend(threads: 2);
        using var store = new WeightStore();
        var y = MatMul(backend, store, w, x, rows, k, n, WeightType.Q8_0, out _);
        int blocks = (k + 31) / 32;
        var xq = new sbyte[blocks * 32];
        var xd = new float[blocks];
        fixed (float* wp = w)
        fixed (sbyte* qx = xq)
        fixed (float* dx = xd)
        {
            var q8 = store.Convert(WeightData.FromFloats(wp, w.Length, k), WeightType.Q8_0);
            for (int r = 0; r < rows; r++)
            {
                Quantize.ActivationRow(x.AsSpan(r * k, k), qx, dx);
                for (int j = 0; j < n; j++)
                {
                    byte* row = q8.Pointer + j * q8.RowBytes;
                    float acc = 0;
                    for (int b = 0; b < blocks; b++)
                    {
                        int sum = 0;
                        for (int c = 0; c < 32; c++) sum += ((sbyte*)(row + b * 34 + 2))[c] * xq[b * 32 + c];
                        acc = MathF.FusedMultiplyAdd(sum, Fp16.ToFloat(*(ushort*)(row + b * 34)) * xd[b], acc);
                    }
                    Assert.True(acc == y[r * n + j], $"row {r} output {j}: {y[r * n + j]} vs emulated {acc}");
                }
            }
        }
    }

    [SharedDataTheory]
    [InlineData(WeightType.Q8_0, false)]
    [InlineData(WeightType.BF16, true)]
    public void Weights_converted_at_load_are_held_only_where_the_backend_reads_them(WeightType format, bool held)
    {
        // stories260K is fp32: --weights bf16 converts into buffers the CPU backend reads in place (held);
        // q8_0 converts, then the backend repacks and the converted buffers are freed (resident memory is
        // the packed copy alone).
        using var model = Cluster.Engine.Loaders.ModelLoader.Load(SharedData.Path_("models", "stories260K", "stories260K.bin"), new CpuBackend(threads: 1), weights: format);
        Assert.Equal(format, model.Weights.MatrixFormat);
        if (held) Assert.True(model.Weights.ConvertedBytes > 0);
        else Assert.Equal(0, model.Weights.ConvertedBytes);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(172)]
    [InlineData(576)]
    [InlineData(1536)]
    public void Q8_0_activation_quantization_in_vectors_equals_the_scalar_loop(int k)
    {
        var x = Random(k, 6, 3f);
        for (int i = 0; i < Math.Min(k, 32); i++) x[i] = i % 8 - 3.5f;  // amax 3.5: 1/d = 127/3.5, ties after scaling are rare
        if (k >= 64)
        {
            for (int i = 32; i < 64; i++) x[i] = (i % 5 - 2) * 63.5f / 127f * (i % 2 == 0 ? 1 : -1); // exact halves: round to even
            x[40] = 1f;                                                                     // amax 1: 1/d = 127
        }
        if (k >= 96) Array.Clear(x, 64, 32);                                                // an all-zero block: d = 0
        if (k >= 128) x[100] = -1e30f;                                                      // one spike
        int blocks = (k + 31) / 32;
        var (qv, dv) = (new sbyte[blocks * 32], new float[blocks]);
        var (qs, ds) = (new sbyte[blocks * 32], new float[blocks]);
        fixed (sbyte* q1 = qv, q2 = qs)
        fixed (float* d1 = dv, d2 = ds)
        {
            Quantize.ActivationRow(x, q1, d1);
            Quantize.UseVectorActivations = false;
            try
            {
                Quantize.ActivationRow(x, q2, d2);
            }
            finally
            {
                Quantize.UseVectorActivations = true;
            }
        }
        Assert.Equal(ds, dv);
        Assert.Equal(qs, qv);
    }

    [Theory]
    [InlineData(WeightType.Q8_0, 1)]
    [InlineData(WeightType.Q8_0, 16)]
    [InlineData(WeightType.BF16, 1)]
    [InlineData(WeightType.BF16, 16)]
    public void Split_decode_products_allocate_nothing_in_steady_state(WeightType type, int rows)
    {
        const int k = 576, n = 256;
        using var backend = new CpuBackend(threads: 2);
        using var store = new WeightStore();
        var w = Random(n * k, 7);
        fixed (float* wp = w)
        {
            var wt = backend.LoadWeights(store.Convert(WeightData.FromFloats(wp, w.Length, k), type));
            using var x = backend.Allocate((long)rows * k);
            using var y = backend.Allocate((long)rows * n);
            backend.CopyFromHost(Random(rows * k, 8), x);
            for (int i = 0; i < 5; i++) backend.MatMul(x, wt, y, rows, k, n);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 50; i++) backend.MatMul(x, wt, y, rows, k, n);
            // Parallel.For with a closure allocated on every call (the products split on the backend's team now).
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
    }

    [Theory]
    [InlineData(WeightType.Q8_0, 576)]
    [InlineData(WeightType.Q8_0, 172)]
    [InlineData(WeightType.BF16, 576)]
    [InlineData(WeightType.BF16, 173)]
    public void Dequantized_rows_equal_the_format_definition(WeightType type, int k)
    {
        // Independent of the kernels: bf16 bits are an fp32's top half; a Q8_0 block is fp16 d and 32 int8
        // q, x = d * q (ggml). Random bytes with finite scales, rows that end mid-block included.
        var rng = new Random(11);
        long rowBytes = WeightLayout.RowBytes(type, k);
        var bytes = new byte[rowBytes];
        rng.NextBytes(bytes);
        var expected = new float[k];
        if (type == WeightType.Q8_0)
            for (int b = 0; b * 32 < k; b++)
            {
                var d = (Half)(float)(rng.NextDouble() * 2 - 1);
                BitConverter.TryWriteBytes(bytes.AsSpan(b * 34, 2), BitConverter.HalfToUInt16Bits(d));
                for (int j = 0; j < 32 && b * 32 + j < k; j++) expected[b * 32 + j] = (float)d * (sbyte)bytes[b * 34 + 2 + j];
            }
        else
            for (int i = 0; i < k; i++)
                expected[i] = BitConverter.UInt32BitsToSingle((uint)BitConverter.ToUInt16(bytes, 2 * i) << 16);
        var got = new float[k];
        fixed (byte* src = bytes) Dequantize.Row(type, src, got);
        for (int i = 0; i < k; i++) Assert.True(BitConverter.SingleToUInt32Bits(expected[i]) == BitConverter.SingleToUInt32Bits(got[i]), $"{type} [{i}]: {got[i]} vs {expected[i]}");
    }

    [Fact]
    public void Bf16_rounds_to_nearest_even()
    {
        Assert.Equal((ushort)0x3f80, Fp16.ToBf16(1f));
        Assert.Equal((ushort)0x3f80, Fp16.ToBf16(BitConverter.UInt32BitsToSingle(0x3f808000))); // tie: to even
        Assert.Equal((ushort)0x3f82, Fp16.ToBf16(BitConverter.UInt32BitsToSingle(0x3f818000))); // tie: to even (up)
        Assert.Equal((ushort)0x3f81, Fp16.ToBf16(BitConverter.UInt32BitsToSingle(0x3f808001)));
        Assert.True(float.IsNaN(Fp16.FromBf16(Fp16.ToBf16(float.NaN))));
    }

    [Fact]
    public void Q8_0_rows_that_are_not_whole_blocks_are_padded()
    {
        Assert.Equal(6 * 34, WeightLayout.RowBytes(WeightType.Q8_0, 172));
        var w = Random(3 * 172, 5);
        using var store = new WeightStore();
        fixed (float* p = w)
        {
            var q = store.Convert(WeightData.FromFloats(p, w.Length, 172), WeightType.Q8_0);
            Assert.Equal(3 * 6 * 34, q.ByteLength);
            var back = new float[w.Length];
            q.CopyToFloat32(back);
            for (int i = 0; i < w.Length; i++) Assert.InRange(Math.Abs(back[i] - w[i]), 0, 0.6f / 127);
        }
    }
}
