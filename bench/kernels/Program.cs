using System.Diagnostics;
using System.Runtime.InteropServices;
using Cluster.Engine.Kernels;
using Cluster.Engine.Loaders;

// CPU time, not wall time: a single-threaded process's CPU time moves much less than its wall time when
// other work shares the machine. LLMCLUSTER_FP32_DOTS=0 sends fp32 decode rows to OpenBLAS instead.
//   matmul ROWS K N REPS [f32|q8|bf16]   one product y[ROWS,N] = x[ROWS,K] · w[N,K]^T, one thread
//   step MODEL THREADS BATCH [WEIGHTS]    one ForwardBatch of BATCH sequences after 64-token prompts, the
//                                         weights converted at load (q8_0, bf16, fp16, fp32; default as stored)
var p = Process.GetCurrentProcess();
double CpuMs() { p.Refresh(); return p.TotalProcessorTime.TotalMilliseconds; }
string dots = Environment.GetEnvironmentVariable("LLMCLUSTER_FP32_DOTS") == "0" ? "OpenBLAS" : "Fp32Dots";

if (args is ["matmul", var rowsArg, var kArg, var nArg, var repsArg, ..])
{
    int rows = int.Parse(rowsArg), k = int.Parse(kArg), n = int.Parse(nArg), reps = int.Parse(repsArg);
    string format = args.Length > 5 ? args[5] : "f32";
    var b = new CpuBackend(threads: 1);
    var rnd = new Random(1);
    var xs = Enumerable.Range(0, rows * k).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray();
    var ws = Enumerable.Range(0, k * n).Select(_ => (float)rnd.NextDouble() - 0.5f).ToArray();
    var x = b.Allocate((long)rows * k);
    var y = b.Allocate((long)rows * n);
    b.CopyFromHost(xs, x);
    var w = Weight(b, format, ws, k, n);
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
Console.Error.WriteLine("usage: matmul ROWS K N REPS [f32|q8|bf16] | step MODEL THREADS BATCH [WEIGHTS]");
return 2;

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
