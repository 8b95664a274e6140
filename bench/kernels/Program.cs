using System.Diagnostics;
using System.Runtime.InteropServices;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;

// CPU time, not wall time: a single-threaded process's CPU time moves much less than its wall time when
// other work shares the machine. LLMCLUSTER_FP32_DOTS=0 sends fp32 decode rows to OpenBLAS instead.
//   matmul ROWS K N REPS [f32|q8|bf16]   one product y[ROWS,N] = x[ROWS,K] · w[N,K]^T, one thread
//   step MODEL THREADS BATCH [WEIGHTS]    one ForwardBatch of BATCH sequences after 64-token prompts, the
//                                         weights converted at load (q8_0, bf16, fp16, fp32; default as stored)
//   q8p ROWS K N REPS                     the packed Q8_0 int8 kernel alone, one thread, CPU time (checked
//                                         against its managed path; LLMCLUSTER_Q8_VNNI=0 takes the AVX2 path)
//   sgemm ROWS K N REPS THREADS           OpenBLAS's cblas_sgemm alone, its own THREADS threads, wall time
//   gemm ROWS K N REPS THREADS [f32|q8|bf16]  the engine's product (CpuBackend with THREADS), wall time
//   prefill MODEL THREADS TOKENS REPS [WEIGHTS]  one TOKENS-token Forward, wall time split by kernel
var p = Process.GetCurrentProcess();
double CpuMs() { p.Refresh(); return p.TotalProcessorTime.TotalMilliseconds; }
string dots = Environment.GetEnvironmentVariable("LLMCLUSTER_FP32_DOTS") == "0" ? "OpenBLAS" : "Fp32Dots";

if (args is ["matmul", var rowsArg, var kArg, var nArg, var repsArg, ..])
{
    int rows = int.Parse(rowsArg), k = int.Parse(kArg), n = int.Parse(nArg), reps = int.Parse(repsArg);
    string format = args.Length > 5 ? args[5] : "f32";
    var b = new CpuBackend(threads: 1);
    var (x, w, y) = Product(b, format, rows, k, n);
    for (int i = 0; i < 3; i++) b.MatMul(x, w, y, rows, k, n);
    var times = new List<double>();
    for (int rep = 0; rep < 5; rep++)
    {
        double t0 = CpuMs();
        for (int i = 0; i < reps; i++) b.MatMul(x, w, y, rows, k, n);
        times.Add((CpuMs() - t0) / reps);
    }
    times.Sort();
    Console.WriteLine($"{format} {(format == "f32" ? dots : "")} {rows} x {k} · {n}: median {times[2]:F3} ms CPU, {2.0 * rows * k * n / times[2] / 1e6:F1} GFLOP/s");
    return 0;
}
if (args is ["q8p", var qrArg, var qkArg, var qnArg, var qrepsArg])
{
    // The packed Q8_0 kernel alone, one thread, CPU time; checked against its managed path first.
    int rows = int.Parse(qrArg), k = int.Parse(qkArg), n = int.Parse(qnArg), reps = int.Parse(qrepsArg);
    var (xs, ws) = RandomOperands(rows, k, n);
    int blocks = (k + 31) / 32;
    unsafe
    {
        var q8 = new byte[n * blocks * 34];
        var packed = new byte[Q8Interleaved.Bytes(n, blocks)];
        var xq = new sbyte[rows * blocks * 32];
        var xd = new float[rows * blocks];
        var xc = new int[rows * blocks];
        var y = new float[rows * n];
        var yRef = new float[rows * n];
        fixed (byte* q = q8, pk = packed) fixed (sbyte* xqp = xq) fixed (float* xdp = xd, yp = y, yr = yRef) fixed (int* xcp = xc)
        {
            for (int j = 0; j < n; j++) Quantize.Row(WeightType.Q8_0, ws.AsSpan(j * k, k), q + (long)j * blocks * 34);
            Q8Interleaved.Pack(q, n, blocks, pk);
            for (int r = 0; r < rows; r++) Quantize.ActivationRow(xs.AsSpan(r * k, k), xqp + r * blocks * 32, xdp + r * blocks);
            for (int i = 0; i < rows * blocks; i++) xc[i] = -128 * Quantize.BlockSum(xqp + i * 32);
            Q8Interleaved.UseAvx2 = false;
            Q8Interleaved.Range(pk, xqp, xdp, xcp, yr, rows, blocks, n, 0, n);
            Q8Interleaved.UseAvx2 = true;
            Q8Interleaved.Range(pk, xqp, xdp, xcp, yp, rows, blocks, n, 0, n);
            if (!y.AsSpan().SequenceEqual(yRef)) { Console.WriteLine("MISMATCH vector vs managed"); return 1; }
            var times = new List<double>();
            for (int rep = 0; rep < 5; rep++)
            {
                double t0 = CpuMs();
                for (int i = 0; i < reps; i++) Q8Interleaved.Range(pk, xqp, xdp, xcp, yp, rows, blocks, n, 0, n);
                times.Add((CpuMs() - t0) / reps);
            }
            times.Sort();
            Console.WriteLine($"q8 packed ({(Q8Interleaved.UseVnni ? "vnni" : "avx2")}) {rows} x {k} · {n}: median {times[2]:F3} ms CPU, {2.0 * rows * k * n / times[2] / 1e6:F1} GFLOP/s");
        }
    }
    return 0;
}
if (args is ["sgemm", var mArg, var kArg2, var nArg2, var repsArg2, var thArg])
{
    int rows = int.Parse(mArg), k = int.Parse(kArg2), n = int.Parse(nArg2), reps = int.Parse(repsArg2), threads = int.Parse(thArg);
    Sgemm.SetThreads(threads);
    var (xs, ws) = RandomOperands(rows, k, n);
    var ys = new float[rows * n];
    double ms = MedianWallMs(reps, () => { unsafe { fixed (float* x = xs, w = ws, y = ys) Sgemm.MatMulTransposed(x, w, y, rows, k, n); } });
    Console.WriteLine($"sgemm ({threads} OpenBLAS threads) {rows} x {k} · {n}: median {ms:F3} ms wall, {2.0 * rows * k * n / ms / 1e6:F1} GFLOP/s");
    return 0;
}
if (args is ["gemm", var mArg3, var kArg3, var nArg3, var repsArg3, var thArg3, ..])
{
    int rows = int.Parse(mArg3), k = int.Parse(kArg3), n = int.Parse(nArg3), reps = int.Parse(repsArg3), threads = int.Parse(thArg3);
    string format = args.Length > 6 ? args[6] : "f32";
    var b = new CpuBackend(threads);
    var (x, w, y) = Product(b, format, rows, k, n);
    double ms = MedianWallMs(reps, () => b.MatMul(x, w, y, rows, k, n));
    Console.WriteLine($"engine {format} ({threads} threads) {rows} x {k} · {n}: median {ms:F3} ms wall, {2.0 * rows * k * n / ms / 1e6:F1} GFLOP/s");
    return 0;
}
if (args is ["prefill", var pModel, var pThreads, var pTokens, var pReps, ..])
{
    int threads = int.Parse(pThreads), tokens = int.Parse(pTokens), reps = int.Parse(pReps);
    string? weights = args.Length > 5 ? args[5] : null;
    var timing = new TimingBackend(new CpuBackend(threads));
    using var m = ModelLoader.Load(pModel, timing, weights: WeightLayout.ParseOption(weights));
    var rnd = new Random(1);
    var prompt = Enumerable.Range(0, tokens).Select(_ => rnd.Next(3, m.Config.VocabSize)).ToArray();
    var logits = new float[m.Config.VocabSize];
    for (int i = 0; i < 2; i++) m.Forward(prompt, m.CreateCache(tokens), logits); // warm up
    timing.Times.Clear();
    double total = 0, cpu = CpuMs();
    for (int i = 0; i < reps; i++)
    {
        var cache = m.CreateCache(tokens);
        var sw = Stopwatch.StartNew();
        m.Forward(prompt, cache, logits);
        total += sw.Elapsed.TotalMilliseconds;
    }
    cpu = CpuMs() - cpu;
    double flops = 0;
    Console.WriteLine($"{weights ?? "as stored"}, {threads} threads, {tokens} tokens: {total / reps:F1} ms wall per prefill ({tokens * reps * 1000.0 / total:F0} tokens/s), {cpu / reps:F1} ms CPU; load {File.ReadAllText("/proc/loadavg")[..14]}");
    double accounted = 0;
    foreach (var (key, (ms, calls)) in timing.Times.OrderByDescending(e => e.Value.Ms))
    {
        string rate = "";
        if (key.StartsWith("matmul "))
        {
            var dims = key[7..].Split('x', '·').Select(int.Parse).ToArray();
            double f = 2.0 * dims[0] * dims[1] * dims[2] * calls;
            flops += f;
            rate = $"  {f / (ms * 1e6):F1} GFLOP/s";
        }
        accounted += ms;
        Console.WriteLine($"  {key,-24} {ms / reps,8:F2} ms {100 * ms / total,5:F1}%  {calls / reps,4} calls{rate}");
    }
    Console.WriteLine($"  {"between calls",-24} {(total - accounted) / reps,8:F2} ms {100 * (total - accounted) / total,5:F1}%");
    Console.WriteLine($"  all products: {flops / reps / 1e9:F2} GFLOP, {flops / (total * 1e6):F1} GFLOP/s over the whole pass");
    return 0;
}
if (args is ["step", var model, var threadsArg, var batchArg, ..])
{
    int threads = int.Parse(threadsArg), batch = int.Parse(batchArg);
    string? weights = args.Length > 4 ? args[4] : null;
    using var m = ModelLoader.Load(model, new CpuBackend(threads), weights: WeightLayout.ParseOption(weights));
    int vocab = m.Config.VocabSize;
    var rnd = new Random(1);
    var prompt = Enumerable.Range(0, 64).Select(_ => rnd.Next(3, vocab)).ToArray();
    var caches = Enumerable.Range(0, batch).Select(_ => m.CreateCache(200)).ToList();
    var one = new float[vocab];
    foreach (var c in caches) m.Forward(prompt, c, one);
    var logits = new float[batch * vocab];
    var tokens = Enumerable.Range(0, batch).Select(_ => rnd.Next(3, vocab)).ToArray();
    for (int i = 0; i < 3; i++) m.ForwardBatch(tokens, caches, logits);
    const int steps = 10;
    double cpu0 = CpuMs();
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < steps; i++) m.ForwardBatch(tokens, caches, logits);
    Console.WriteLine($"{weights ?? "as stored"} ({dots}), {threads} threads, batch {batch}: {sw.Elapsed.TotalMilliseconds / steps:F1} ms/step wall, {(CpuMs() - cpu0) / steps:F1} ms/step CPU");
    return 0;
}
Console.Error.WriteLine("usage: matmul ROWS K N REPS [f32|q8|bf16] | q8p ROWS K N REPS | step MODEL THREADS BATCH [WEIGHTS] | sgemm ROWS K N REPS THREADS | gemm ROWS K N REPS THREADS [FORMAT] | prefill MODEL THREADS TOKENS REPS [WEIGHTS]");
return 2;

/// <summary>Median over 7 rounds of the wall time of one call, after 3 warm-up calls; REPS calls per round.</summary>
static double MedianWallMs(int reps, Action call)
{
    for (int i = 0; i < 3; i++) call();
    var times = new List<double>();
    for (int round = 0; round < 7; round++)
    {
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) call();
        times.Add(sw.Elapsed.TotalMilliseconds / reps);
    }
    times.Sort();
    return times[3];
}

/// <summary>Random x[ROWS,K] and w[N,K] (the same values for every mode).</summary>
static (float[] X, float[] W) RandomOperands(int rows, int k, int n)
{
    var rnd = new Random(1);
    var xs = Enumerable.Range(0, rows * k).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray();
    var ws = Enumerable.Range(0, k * n).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray();
    return (xs, ws);
}

/// <summary>The operands of one product on <paramref name="b"/>, the weights in <paramref name="format"/>.</summary>
static (Tensor X, Tensor W, Tensor Y) Product(CpuBackend b, string format, int rows, int k, int n)
{
    var (xs, ws) = RandomOperands(rows, k, n);
    var x = b.Allocate((long)rows * k);
    b.CopyFromHost(xs, x);
    return (x, Weight(b, format, ws, k, n), b.Allocate((long)rows * n));
}

static unsafe Tensor Weight(CpuBackend b, string format, float[] ws, int k, int n)
{
    if (format == "f32")
    {
        var w = b.Allocate((long)k * n);
        b.CopyFromHost(ws, w);
        return w;
    }
    var type = format == "q8" ? WeightType.Q8_0 : WeightType.BF16;
    long rowBytes = WeightLayout.RowBytes(type, k);
    var mem = (byte*)NativeMemory.AlignedAlloc((nuint)(rowBytes * n), 64); // lives as long as the process
    for (int j = 0; j < n; j++) Quantize.Row(type, ws.AsSpan(j * k, k), mem + j * rowBytes);
    return b.LoadWeights(new WeightData(mem, (long)k * n, type, k));
}
