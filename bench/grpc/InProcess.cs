using System.Diagnostics;
using Cluster.Interop;
using Cluster.Serving.Routing;
using Grpc.Core;

/// <summary>
/// Our client and server in one process: CPU milliseconds (user + system, both sides together)
/// and wall milliseconds per workload. CPU time shows the layer's own cost even when other
/// processes compete for the 2 cores.
/// </summary>
internal static class InProcess
{
    public static async Task RunAsync(int rounds)
    {
        await using var host = await BenchServer.StartAsync();
        using var channel = GrpcChannels.Create(host.GrpcAddress);
        var client = new TestService.TestServiceClient(channel);
        var chunk = new StreamingInputCallRequest { Payload = new Payload { Body = InteropService.MakeBody(1 << 20, 0) } };

        for (var round = 0; round < rounds; round++)
        {
            await Measure("up_256mib", async () =>
            {
                using var call = client.StreamingInputCall();
                for (var i = 0; i < 256; i++) await call.RequestStream.WriteAsync(chunk);
                await call.RequestStream.CompleteAsync();
                await call.ResponseAsync;
            });
            await Measure("down_256mib", async () =>
            {
                using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 256, Size = 1 << 20 });
                await foreach (var _ in call.ResponseStream.ReadAllAsync()) { }
            });
            await Measure("unary_seq_5000", async () =>
            {
                for (var i = 0; i < 5000; i++) await client.EmptyCallAsync(new Empty());
            });
        }
    }

    private static async Task Measure(string name, Func<Task> work)
    {
        var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        await work();
        process.Refresh();
        Console.WriteLine($"{name} cpu_ms {(process.TotalProcessorTime - cpu).TotalMilliseconds:F0} wall_ms {wall.Elapsed.TotalMilliseconds:F0}");
    }
}
