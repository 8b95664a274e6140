// Loopback benchmark of the gRPC stack (Grpc.AspNetCore server hosted like ServiceHost, Grpc.Net.Client
// channel from GrpcChannels).
//   server                      serve TestService on 127.0.0.1 (prints "PORT n"; stops when stdin closes)
//   client PORT SECONDS         measure against a TestService server, print one line per metric
//   inproc ROUNDS               client and server in this process; prints process CPU time per
//                               workload, which a busy shared machine disturbs less than wall time
using System.Diagnostics;
using Cluster.Interop;
using Cluster.Serving.Routing;
using Grpc.Core;

if (args is ["server"])
{
    await using var host = await BenchServer.StartAsync();
    Console.WriteLine($"PORT {host.GrpcEndPoint.Port}");
    await Console.In.ReadToEndAsync();
    return 0;
}
if (args is ["inproc", var roundsText])
{
    await InProcess.RunAsync(int.Parse(roundsText));
    return 0;
}
if (args is not ["client", var portText, var secondsText])
{
    Console.Error.WriteLine("usage: server | client PORT SECONDS | inproc ROUNDS");
    return 2;
}

var seconds = double.Parse(secondsText);
using var channel = GrpcChannels.Create(new Uri($"http://127.0.0.1:{portText}"));
var client = new TestService.TestServiceClient(channel);
await client.EmptyCallAsync(new Empty()); // connect and warm up

Console.WriteLine($"unary_seq_calls_per_s {await UnaryRate(1):F0}");
Console.WriteLine($"unary_c16_calls_per_s {await UnaryRate(16):F0}");
Console.WriteLine($"stream_down_mib_per_s {await Best(StreamDown):F0}");
Console.WriteLine($"stream_up_mib_per_s {await Best(StreamUp):F0}");
return 0;

// Calls completed per second with `concurrency` calls in flight, over `seconds`.
async Task<double> UnaryRate(int concurrency)
{
    var stop = Stopwatch.StartNew();
    var counts = await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
    {
        long n = 0;
        while (stop.Elapsed.TotalSeconds < seconds)
        {
            await client.EmptyCallAsync(new Empty());
            n++;
        }
        return n;
    }));
    return counts.Sum() / stop.Elapsed.TotalSeconds;
}

// 256 MiB server -> client as 1 MiB messages.
async Task<double> StreamDown()
{
    var sw = Stopwatch.StartNew();
    using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 256, Size = 1 << 20 });
    long bytes = 0;
    await foreach (var m in call.ResponseStream.ReadAllAsync()) bytes += m.Payload.Body.Length;
    return bytes / (1024.0 * 1024) / sw.Elapsed.TotalSeconds;
}

// 256 MiB client -> server as 1 MiB messages.
async Task<double> StreamUp()
{
    var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = InteropService.MakeBody(1 << 20, 0) } };
    var sw = Stopwatch.StartNew();
    using var call = client.StreamingInputCall();
    for (var i = 0; i < 256; i++) await call.RequestStream.WriteAsync(chunk);
    await call.RequestStream.CompleteAsync();
    var response = await call.ResponseAsync;
    return response.AggregatedPayloadSize / (1024.0 * 1024) / sw.Elapsed.TotalSeconds;
}

// Best of three runs: the machine is shared, the best run is the least disturbed one.
static async Task<double> Best(Func<Task<double>> run)
{
    var best = 0.0;
    for (var i = 0; i < 3; i++) best = Math.Max(best, await run());
    return best;
}
