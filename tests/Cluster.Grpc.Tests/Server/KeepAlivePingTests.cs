using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Cluster.Grpc.Tests.Hosting;
using Cluster.Grpc.Tests.Interop;
using Cluster.Interop;
using Cluster.Serving.Hosting;
using Cluster.Serving.Routing;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Xunit;
using Xunit.Abstractions;

namespace Cluster.Grpc.Tests.Server;

/// <summary>
/// The server's HTTP/2 keep-alive pings (GrpcStack.KeepAlivePingDelay): a connection whose client
/// vanished is closed, a live client's idle stream is not. Without them (Kestrel's default) a connection
/// with an open stream and nothing to send was held for as long as the process lived.
/// </summary>
public sealed class KeepAlivePingTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Delay = TimeSpan.FromSeconds(1), Timeout = TimeSpan.FromSeconds(1);

    private static Task<GrpcTestHost> StartAsync(InteropService service) =>
        GrpcTestHost.StartAsync(s => s.AddSingleton(service), app => app.MapGrpcService<InteropService>(),
            new GrpcTestHostOptions { KeepAlivePingDelay = Delay, KeepAlivePingTimeout = Timeout });

    [Fact]
    public async Task Every_service_pings_its_http2_connections()
    {
        var options = ServiceOptions.Parse(ServiceRole.CacheManager, ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0"], new Dictionary<string, string?>());
        await using var running = await ServiceHost.StartAsync(options, (_, _) => Task.FromResult<IClusterService>(new NoService()));
        var http2 = running.App.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits.Http2;
        Assert.Equal(GrpcStack.KeepAlivePingDelay, http2.KeepAlivePingDelay);
        Assert.Equal(GrpcStack.KeepAlivePingTimeout, http2.KeepAlivePingTimeout);
        Assert.True(http2.KeepAlivePingDelay <= TimeSpan.FromMinutes(5), "pings that rare find a vanished client too late");
    }

    /// <summary>
    /// A client that opened a stream (a server-streaming call that sends a message every half second for
    /// minutes) and then answers nothing, as one whose host vanished: the server pings it and closes the
    /// connection when no answer comes. A peer that answers nothing, rather than a closed socket, is what a
    /// vanished host looks like.
    /// </summary>
    [Fact]
    public async Task A_connection_whose_client_stopped_answering_is_closed()
    {
        await using var host = await StartAsync(new InteropService());
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(host.GrpcEndPoint);
        var stream = tcp.GetStream();
        await stream.WriteAsync(OpenStream(host.GrpcEndPoint.Port));

        // Read (so the server's writes are not what stops it) but answer nothing: no SETTINGS ACK, no PING ACK.
        var clock = Stopwatch.StartNew();
        var buffer = new byte[16 << 10];
        int pings = 0, headers = 0;
        uint goAwayError = uint.MaxValue;
        var frames = new FrameReader();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0)
                foreach (var (type, flags, payload) in frames.Add(buffer.AsSpan(0, n)))
                {
                    if (type == 6 && (flags & 1) == 0) pings++;
                    if (type == 1) headers++;
                    if (type == 7) goAwayError = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(4));
                }
        }
        catch (OperationCanceledException) { Assert.Fail($"the connection was still open after {clock.Elapsed.TotalSeconds:F0} s: {pings} pings, nothing closed it"); }
        catch (IOException) { } // a reset is a close too
        output.WriteLine($"closed after {clock.Elapsed.TotalSeconds:F1} s; {pings} pings, {headers} HEADERS, GOAWAY error {(goAwayError == uint.MaxValue ? "none" : goAwayError)}");
        Assert.True(headers >= 1, "the call was never answered: the stream was not open");
        Assert.True(pings >= 1, "closed without a ping: something else closed it");
    }

    /// <summary>A live client (Grpc.Net.Client, which answers pings from its HTTP/2 stack) whose stream
    /// is idle for several times the ping delay and timeout keeps it: both messages arrive.</summary>
    [Fact]
    public async Task A_live_clients_idle_stream_is_not_cut()
    {
        await using var host = await StartAsync(new InteropService());
        using var channel = GrpcChannels.Create(host.GrpcAddress);
        var client = new TestService.TestServiceClient(channel);
        var idle = 3 * (Delay + Timeout);
        using var call = client.StreamingOutputCall(new StreamingOutputCallRequest { Count = 2, Size = 8, IntervalMs = (int)idle.TotalMilliseconds },
            deadline: DateTime.UtcNow.AddSeconds(60));
        var clock = Stopwatch.StartNew();
        int received = 0;
        await foreach (var _ in call.ResponseStream.ReadAllAsync()) received++;
        output.WriteLine($"{received} messages in {clock.Elapsed.TotalSeconds:F1} s, each after {idle.TotalSeconds:F0} s of silence");
        Assert.Equal(2, received);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    /// <summary>The connection preface, SETTINGS, and a StreamingOutputCall of 1,000 messages 500 ms apart
    /// (HEADERS, then the request message with END_STREAM).</summary>
    private static byte[] OpenStream(int port)
    {
        var block = new List<byte> { 0x83, 0x86 }; // :method POST, :scheme http (static table)
        Literal(block, 4, "/cluster.interop.TestService/StreamingOutputCall"); // :path
        Literal(block, 1, $"127.0.0.1:{port}");             // :authority
        Literal(block, 31, "application/grpc");             // content-type
        block.Add(0x00);                                    // te: trailers (new name)
        Str(block, "te");
        Str(block, "trailers");
        var preface = Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        var message = new StreamingOutputCallRequest { Count = 1000, Size = 8, IntervalMs = 500 }.ToByteArray();
        return [.. preface, .. Frame(4, 0, 0, []), .. Frame(1, 0x4, 1, [.. block]), .. Frame(0, 0x1, 1, [.. RawHttp2.Frame(message)])];
    }

    /// <summary>A literal header field without indexing, its name from the static table (4-bit prefix).</summary>
    private static void Literal(List<byte> block, int nameIndex, string value)
    {
        if (nameIndex < 15) block.Add((byte)nameIndex);
        else { block.Add(0x0F); block.Add((byte)(nameIndex - 15)); }
        Str(block, value);
    }

    private static void Str(List<byte> block, string s)
    {
        if (s.Length >= 127) throw new ArgumentException("short strings only");
        block.Add((byte)s.Length);
        block.AddRange(Encoding.ASCII.GetBytes(s));
    }

    private static byte[] Frame(byte type, byte flags, int streamId, byte[] payload)
    {
        var frame = new byte[9 + payload.Length];
        frame[0] = (byte)(payload.Length >> 16);
        frame[1] = (byte)(payload.Length >> 8);
        frame[2] = (byte)payload.Length;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), streamId);
        payload.CopyTo(frame, 9);
        return frame;
    }

    /// <summary>Splits what arrives into HTTP/2 frames.</summary>
    private sealed class FrameReader
    {
        private readonly List<byte> _pending = [];

        public List<(byte Type, byte Flags, byte[] Payload)> Add(ReadOnlySpan<byte> bytes)
        {
            _pending.AddRange(bytes.ToArray());
            var frames = new List<(byte, byte, byte[])>();
            while (_pending.Count >= 9)
            {
                int length = (_pending[0] << 16) | (_pending[1] << 8) | _pending[2];
                if (_pending.Count < 9 + length) break;
                frames.Add((_pending[3], _pending[4], _pending.GetRange(9, length).ToArray()));
                _pending.RemoveRange(0, 9 + length);
            }
            return frames;
        }
    }

    private sealed class NoService : IClusterService
    {
        public void MapGrpcServices(IEndpointRouteBuilder endpoints) { }
        public bool IsReady => true;
        public IReadOnlyList<string> MeterNames => [];
        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
