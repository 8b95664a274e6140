using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using Grpc.Health.V1;
using Grpc.Net.Client;
using static LlmCtl.Fuzz.FuzzInputs;
using static LlmCtl.Fuzz.Http2Frames;

namespace LlmCtl.Fuzz;

/// <summary>What to fuzz: the gateway's gRPC (h2c) and HTTP/1.1 ports, and the processes to watch (their RSS and liveness).</summary>
public sealed record FuzzTarget(string Host, int GrpcPort, int HttpPort, IReadOnlyList<(string Name, Process Process)> Processes);

public sealed record FuzzOptions(int Requests, int Seed, int Concurrency = 8, int CheckEvery = 1000, double TimeoutSeconds = 15);

/// <summary>One distinct answer worth a look (5xx, INTERNAL, UNKNOWN, a hang), with the first input that got it.</summary>
public sealed record FuzzExample(string Category, string Kind, string Answer, string Message, int Index, string Input, bool Finding)
{
    public int Count;

    /// <summary><see cref="Count"/> as a property, for JSON.</summary>
    public int Occurrences => Count;

    /// <summary>Due to a known bug outside this repository (<see cref="KnownUpstream"/>).</summary>
    public bool Known => Message.StartsWith(KnownUpstream.Prefix, StringComparison.Ordinal);
}

public sealed record FuzzCheck(int AfterRequests, bool HttpOk, bool GrpcOk, string? Error, IReadOnlyDictionary<string, long> RssKiB, IReadOnlyList<string> Exited);

public sealed class FuzzReport
{
    public required FuzzOptions Options { get; init; }
    public ConcurrentDictionary<string, int> ByCategory { get; } = new();
    public ConcurrentDictionary<string, int> ByKind { get; } = new();
    /// <summary>"category answer" → count, e.g. "grpc grpc:InvalidArgument", "h1 http:400", "h2 goaway:PROTOCOL_ERROR".</summary>
    public ConcurrentDictionary<string, int> ByAnswer { get; } = new();
    /// <summary>"category kind answer" → count.</summary>
    public ConcurrentDictionary<string, int> ByKindAnswer { get; } = new();
    public ConcurrentDictionary<string, FuzzExample> Examples { get; } = new();
    public List<FuzzCheck> Checks { get; } = [];
    public double WallSeconds { get; set; }

    public IEnumerable<FuzzExample> Findings => Examples.Values.Where(e => e.Finding).OrderBy(e => e.Index);

    /// <summary>Answers due to a known bug outside this repository (<see cref="KnownUpstream"/>): reported, not findings.</summary>
    public IEnumerable<FuzzExample> KnownUpstreamAnswers => Examples.Values.Where(e => e.Known).OrderBy(e => e.Index);
    public int FailedChecks => Checks.Count(c => !c.HttpOk || !c.GrpcOk || c.Exited.Count > 0);
}

/// <summary>
/// A seeded generator of malformed requests against the gateway's two front doors, and the loop that
/// sends them: raw HTTP/2 frames on the gRPC port (h2c with prior knowledge), well-framed HTTP/2 gRPC
/// calls with broken bodies and headers on the gateway's real methods, and raw HTTP/1.1 requests to the
/// OpenAI-compatible API. Request i's input depends only on (seed, i), so any one can be replayed.
/// Every <see cref="FuzzOptions.CheckEvery"/> requests a real completion (HTTP) and a gRPC health check
/// must succeed, and each watched process's RSS is sampled.
/// </summary>
public sealed class FrontDoorFuzzer : IDisposable
{
    public const string GatewayService = "/llmcluster.v1.Gateway/";
    private static readonly string[] GrpcMethods =
    [
        GatewayService + "Generate", GatewayService + "Resume", GatewayService + "Abort", GatewayService + "GetModelInfo",
        GatewayService + "Health", GatewayService + "ListSessions", GatewayService + "DeleteSession", "/grpc.health.v1.Health/Check",
    ];

    private readonly FuzzTarget _target;
    private readonly FuzzOptions _options;
    /// <summary>The fuzz gRPC calls' client: made by <see cref="RunAsync"/> and disposed (its pooled HTTP/2
    /// connections closed) when the run ends, as a client that went away has closed its sockets. Left open,
    /// they idled into the bench's final quiet stretch (the pool closes them after a minute), which the
    /// baseline's quiet state did not have (bench/RESULTS.md, after run 5).</summary>
    private HttpClient? _grpcHttp;
    private readonly HttpClient _check;
    private readonly GrpcChannel _channel;
    private readonly SemaphoreSlim _checking = new(1, 1);

    public FrontDoorFuzzer(FuzzTarget target, FuzzOptions options)
    {
        _target = target;
        _options = options;
        _check = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        _channel = GrpcChannel.ForAddress($"http://{target.Host}:{target.GrpcPort}");
    }

    private string? _modelId;

    /// <summary>The served model's id (GET /v1/models), which the OpenAI API requires in each request.</summary>
    private async Task<string> ModelIdAsync()
    {
        if (_modelId is not null) return _modelId;
        var text = await _check.GetStringAsync($"http://{_target.Host}:{_target.HttpPort}/v1/models");
        using var doc = System.Text.Json.JsonDocument.Parse(text);
        return _modelId = doc.RootElement.GetProperty("data")[0].GetProperty("id").GetString()!;
    }

    private TimeSpan RequestTimeout => TimeSpan.FromSeconds(_options.TimeoutSeconds);

    /// <summary>Sends the requests (<paramref name="firstIndex"/> on); <paramref name="progress"/> gets the count done.</summary>
    public async Task<FuzzReport> RunAsync(Action<int>? progress = null, int firstIndex = 0, CancellationToken ct = default)
    {
        var report = new FuzzReport { Options = _options };
        var clock = Stopwatch.StartNew();
        using var fuzzHttp = _grpcHttp = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = true }) { Timeout = Timeout.InfiniteTimeSpan };
        report.Checks.Add(await CheckAsync(0));
        _modelJson = System.Text.Json.JsonSerializer.Serialize(await ModelIdAsync());
        int next = firstIndex - 1, done = 0;
        var workers = Enumerable.Range(0, Math.Max(1, _options.Concurrency)).Select(_ => Task.Run(async () =>
        {
            for (int i = Interlocked.Increment(ref next); i < firstIndex + _options.Requests && !ct.IsCancellationRequested; i = Interlocked.Increment(ref next))
            {
                await OneAsync(report, i);
                int d = Interlocked.Increment(ref done);
                progress?.Invoke(d);
                if (_options.CheckEvery > 0 && d % _options.CheckEvery == 0)
                {
                    var check = await CheckAsync(d);
                    lock (report.Checks) report.Checks.Add(check);
                }
            }
        }, ct)).ToArray();
        await Task.WhenAll(workers);
        report.WallSeconds = clock.Elapsed.TotalSeconds;
        _grpcHttp = null; // fuzzHttp's connections close as it is disposed, before the caller's quiet stretch
        return report;
    }

    /// <summary>Sessions the gateway holds now (its ListSessions, which leaves expired ones out); -1 if it does not answer.</summary>
    public async Task<int> SessionCountAsync()
    {
        try
        {
            var r = await new LlmCluster.V1.Gateway.GatewayClient(_channel).ListSessionsAsync(new LlmCluster.V1.ListSessionsRequest { Limit = 1_000_000 }, deadline: DateTime.UtcNow.AddSeconds(30));
            return r.Sessions.Count;
        }
        catch (Grpc.Core.RpcException) { return -1; }
    }

    /// <summary>A real small completion over HTTP, a gRPC health check, each process's RSS and liveness.</summary>
    public async Task<FuzzCheck> CheckAsync(int after)
    {
        await _checking.WaitAsync();
        try
        {
            bool httpOk = false, grpcOk = false;
            string? error = null;
            try
            {
                var model = System.Text.Json.JsonSerializer.Serialize(await ModelIdAsync());
                using var content = new StringContent($"{{\"model\":{model},\"prompt\":\"Once upon a time\",\"max_tokens\":4,\"temperature\":0}}", Encoding.UTF8, "application/json");
                using var response = await _check.PostAsync($"http://{_target.Host}:{_target.HttpPort}/v1/completions", content);
                var text = await response.Content.ReadAsStringAsync();
                httpOk = response.StatusCode == HttpStatusCode.OK && text.Contains("\"choices\"");
                if (!httpOk) error = $"completion: HTTP {(int)response.StatusCode} {Truncate(text, 200)}";
            }
            catch (Exception e) { error = $"completion: {e.GetType().Name}: {e.Message}"; }
            try
            {
                var health = await new Health.HealthClient(_channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(30));
                grpcOk = health.Status == HealthCheckResponse.Types.ServingStatus.Serving;
                if (!grpcOk) error += $" health: {health.Status}";
            }
            catch (Exception e) { error += $" health: {e.GetType().Name}: {e.Message}"; }
            var rss = new Dictionary<string, long>();
            var exited = new List<string>();
            foreach (var (name, process) in _target.Processes)
            {
                if (process.HasExited) exited.Add($"{name} (pid {process.Id}, exit {process.ExitCode})");
                else if (ProcessMemory.RssKiB(process.Id) is long kib) rss[name] = kib;
            }
            return new FuzzCheck(after, httpOk, grpcOk, error?.Trim(), rss, exited);
        }
        finally { _checking.Release(); }
    }

    private async Task OneAsync(FuzzReport report, int index)
    {
        var r = new Random(unchecked(_options.Seed * 1_000_003 + index));
        int pick = r.Next(100);
        var (category, result) = pick < 35 ? ("h2", await RawHttp2Async(r))
            : pick < 70 ? ("grpc", await GrpcAsync(r))
            : ("h1", await Http1Async(r));
        report.ByCategory.AddOrUpdate(category, 1, (_, n) => n + 1);
        report.ByKind.AddOrUpdate($"{category} {result.Kind}", 1, (_, n) => n + 1);
        foreach (var answer in result.Answers)
        {
            report.ByAnswer.AddOrUpdate($"{category} {answer}", 1, (_, n) => n + 1);
            report.ByKindAnswer.AddOrUpdate($"{category} {result.Kind.Split('+')[0]} {answer}", 1, (_, n) => n + 1);
        }
        if (result.Notable is { } notable)
        {
            var key = $"{category} {notable.Answer} {notable.Message}";
            var example = report.Examples.GetOrAdd(key, _ => new FuzzExample(category, result.Kind, notable.Answer, notable.Message, index, Preview(result.Input), notable.Finding));
            Interlocked.Increment(ref example.Count);
        }
    }

    private sealed record Result(string Kind, byte[] Input, List<string> Answers, (string Answer, string Message, bool Finding)? Notable = null);

    // ------------------------------------------------------------------ raw HTTP/2 frames on the gRPC port

    private async Task<Result> RawHttp2Async(Random r)
    {
        var send = new List<byte[]>();
        string kind;
        bool ping = true, closeWrite = false;
        int awaitStream = 0; // a well-formed request's stream: wait for its end too
        int stream = 1;
        if (r.Next(25) == 0)
        {
            kind = "bad-preface";
            var p = (byte[])Preface.Clone();
            if (r.Next(2) == 0) p[r.Next(p.Length)] ^= (byte)r.Next(1, 256);
            else p = p[..r.Next(p.Length)];
            send.Add(p);
            send.Add(Bytes(r, 64));
            ping = false;
            closeWrite = true;
        }
        else
        {
            send.Add(Preface);
            send.Add(r.Next(4) == 0 ? RandomSettings(r) : SettingsFrame());
            int actions = r.Next(1, 6);
            var kinds = new List<string>();
            for (int a = 0; a < actions && !closeWrite; a++)
            {
                int what = r.Next(15);
                kinds.Add(what switch
                {
                    0 => "random-frame", 1 => "huge-length", 2 => "truncated", 3 => "garbage-hpack", 4 => "data-on-closed",
                    5 => "data-on-idle", 6 => "settings-flood", 7 => "window-update", 8 => "continuation", 9 => "headers-interleaved",
                    10 => "priority", 11 => "rst-idle", 12 => "ping-bad", 13 => "push-promise", _ => "valid-call",
                });
                switch (what)
                {
                    case 0:
                        send.Add(Frame((byte)(r.Next(3) == 0 ? r.Next(256) : r.Next(10)), (byte)r.Next(256), Pick(r, 0, stream, stream + 2, 2, r.Next(), int.MaxValue), Bytes(r, 48)));
                        break;
                    case 1: // a length far past SETTINGS_MAX_FRAME_SIZE (16 KiB), then a little data
                        send.Add(Header(Pick(r, 0xFFFFFF, 16_385, 1 << 20, r.Next(16_385, 0xFFFFFF)), Pick(r, Data, Headers, Settings, Ping, (byte)r.Next(256)), (byte)r.Next(256), Pick(r, 0, 1, stream)));
                        send.Add(Bytes(r, 64));
                        closeWrite = true;
                        break;
                    case 2: // declares more than follows, then the client stops sending
                        {
                            var payload = Bytes(r, 64);
                            send.Add(Header(payload.Length + r.Next(1, 1000), Pick(r, Data, Headers, Settings, WindowUpdate), (byte)r.Next(256), Pick(r, 0, 1, stream)));
                            send.Add(payload);
                            closeWrite = true;
                            break;
                        }
                    case 3:
                        send.Add(Frame(Headers, (byte)(EndHeaders | (r.Next(2) == 0 ? EndStream : 0) | (r.Next(6) == 0 ? Padded | PriorityFlag : 0)), stream, Bytes(r, 64)));
                        stream += 2;
                        break;
                    case 4: // a complete request, then DATA on its (half-)closed stream
                        send.Add(Frame(Headers, EndHeaders, stream, GrpcRequestHeaders(Pick(r, GrpcMethods), $"127.0.0.1:{_target.GrpcPort}")));
                        send.Add(Frame(Data, EndStream, stream, [0, 0, 0, 0, 0]));
                        send.Add(Frame(Data, (byte)r.Next(2), stream, Bytes(r, 32)));
                        stream += 2;
                        break;
                    case 5:
                        send.Add(Frame(Data, (byte)r.Next(2), Pick(r, stream + 40, 0, 2, 1_000_001), Bytes(r, 32)));
                        break;
                    case 6: // bounded: at most 100 SETTINGS frames, some with values out of range
                        for (int k = r.Next(10, 101); k > 0; k--) send.Add(RandomSettings(r));
                        break;
                    case 7:
                        send.Add(Frame(WindowUpdate, 0, Pick(r, 0, 1, stream, 99), r.Next(3) == 0 ? Bytes(r, 6) : U32(Pick(r, 0u, 0x7FFFFFFFu, 0xFFFFFFFFu, (uint)r.Next()))));
                        if (r.Next(2) == 0) send.Add(Frame(WindowUpdate, 0, 0, U32(0x7FFFFFFF)));
                        break;
                    case 8: // CONTINUATION with no HEADERS before it
                        send.Add(Frame(Continuation, (byte)r.Next(256), Pick(r, 0, stream, 1), Bytes(r, 32)));
                        break;
                    case 9: // HEADERS without END_HEADERS, then some other frame where a CONTINUATION must come
                        send.Add(Frame(Headers, 0, stream, GrpcRequestHeaders(GrpcMethods[0], "x")[..r.Next(1, 20)]));
                        send.Add(Frame(Pick(r, Data, Ping, Settings, Headers), 0, Pick(r, 0, stream, stream + 2), Bytes(r, 8)));
                        stream += 2;
                        break;
                    case 10:
                        send.Add(Frame(Priority, 0, Pick(r, 0, stream), r.Next(2) == 0 ? Bytes(r, 10) : [.. U32((uint)stream), 16]));
                        break;
                    case 11:
                        send.Add(Frame(RstStream, 0, Pick(r, 0, stream, stream + 20), r.Next(3) == 0 ? Bytes(r, 8) : U32((uint)r.Next(14))));
                        break;
                    case 12:
                        send.Add(Frame(Ping, (byte)r.Next(2), Pick(r, 0, 0, 1), Bytes(r, 16)));
                        break;
                    case 13:
                        send.Add(Frame(PushPromise, EndHeaders, Pick(r, 0, 1, stream), [.. U32(2), .. Bytes(r, 16)]));
                        break;
                    default: // a well-formed Health call, so streams really run among the garbage
                        send.Add(Frame(Headers, EndHeaders, stream, GrpcRequestHeaders(GatewayService + "Health", $"127.0.0.1:{_target.GrpcPort}")));
                        send.Add(Frame(Data, EndStream, stream, [0, 0, 0, 0, 0]));
                        awaitStream = awaitStream == 0 ? stream : awaitStream;
                        stream += 2;
                        break;
                }
            }
            kind = kinds[0] + (kinds.Count > 1 ? "+more" : "");
        }
        var input = send.SelectMany(b => b).ToArray();
        var answers = new List<string>();
        (string, string, bool)? notable = null;
        using var cts = new CancellationTokenSource(RequestTimeout);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(_target.Host, _target.GrpcPort, cts.Token);
            using var net = new NetworkStream(socket, ownsSocket: false);
            var pingPayload = "fuzzping"u8.ToArray();
            try
            {
                await net.WriteAsync(ping ? [.. input, .. Frame(Ping, 0, 0, pingPayload)] : input, cts.Token);
                if (closeWrite) socket.Shutdown(SocketShutdown.Send);
            }
            catch (IOException) { answers.Add("write-failed"); }
            bool pingAck = false, streamDone = awaitStream == 0;
            var header = new byte[9];
            // Once the PING is answered the server has taken in everything sent; a call's response may still be
            // held back by the flow-control window the random SETTINGS gave it, so it gets a few seconds more.
            using var afterPing = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
            while (!(pingAck && streamDone))
            {
                try
                {
                    if (!await ReadFullyAsync(net, header, afterPing.Token)) { answers.Add("eof"); break; }
                }
                catch (OperationCanceledException) when (pingAck && !cts.IsCancellationRequested) { answers.Add("call-unfinished-after-ping"); break; }
                int length = header[0] << 16 | header[1] << 8 | header[2];
                byte type = header[3], flags = header[4];
                int sid = (int)(System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(5)) & 0x7FFFFFFF);
                var payload = new byte[length];
                if (!await ReadFullyAsync(net, payload, cts.Token)) { answers.Add("eof-mid-frame"); break; }
                if (type == Ping && (flags & Ack) != 0 && payload.AsSpan().SequenceEqual(pingPayload))
                {
                    pingAck = true;
                    afterPing.CancelAfter(TimeSpan.FromSeconds(3));
                }
                else if (type == GoAway && length >= 8)
                {
                    uint code = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(4));
                    answers.Add($"goaway:{ErrorName(code)}");
                    // INTERNAL_ERROR is a finding, unless the input has what is known to trigger it upstream.
                    if (code == 2) notable = KnownUpstream.ExplainInternalError(input) is { } known
                        ? ($"goaway:{ErrorName(code)}", known, false)
                        : ($"goaway:{ErrorName(code)}", Encoding.UTF8.GetString(payload.AsSpan(8)), true);
                }
                else if (type == RstStream && length == 4)
                {
                    uint code = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(payload);
                    answers.Add($"rst:{ErrorName(code)}");
                    if (code == 2) notable = ($"rst:{ErrorName(code)}", "", true);
                    if (sid == awaitStream) streamDone = true;
                }
                else if (type == Headers)
                {
                    if (LeadingStatus(payload) is int status)
                    {
                        answers.Add($"status:{status}");
                        if (status >= 500) notable = ($"status:{status}", "", true);
                    }
                    if (sid == awaitStream && (flags & EndStream) != 0) streamDone = true;
                }
                else if (type == Data && sid == awaitStream && (flags & EndStream) != 0) streamDone = true;
            }
            if (pingAck) answers.Add("ping-ack");
        }
        catch (OperationCanceledException) { answers.Add("timeout"); notable = ("timeout", $"no answer within {RequestTimeout.TotalSeconds:F0} s", true); }
        catch (Exception e) when (e is IOException or SocketException) { answers.Add(e.InnerException is SocketException { SocketErrorCode: SocketError.ConnectionReset } || e is SocketException { SocketErrorCode: SocketError.ConnectionReset } ? "reset" : "io-error"); }
        return new Result(kind, input, answers.Distinct().ToList(), notable);
    }

    private static byte[] RandomSettings(Random r)
    {
        var s = new (ushort, uint)[r.Next(0, 6)];
        for (int i = 0; i < s.Length; i++)
            s[i] = ((ushort)(r.Next(4) == 0 ? r.Next(65536) : r.Next(1, 7)), Pick(r, 0u, 1u, 2u, 16_383u, 16_384u, 16_777_216u, 0x7FFFFFFFu, 0x80000000u, uint.MaxValue, (uint)r.Next()));
        var frame = SettingsFrame(s);
        return r.Next(8) switch
        {
            0 => [.. Header(frame.Length - 9 + 1, Settings, 0, 0), .. frame[9..], 0], // length not a multiple of 6
            1 => Frame(Settings, Ack, 0, frame[9..]), // ACK with a payload
            2 => Frame(Settings, 0, 1, frame[9..]), // on a stream
            _ => frame,
        };
    }

    private static async Task<bool> ReadFullyAsync(Stream s, byte[] buffer, CancellationToken ct)
    {
        int n = 0;
        while (n < buffer.Length)
        {
            int k = await s.ReadAsync(buffer.AsMemory(n), ct);
            if (k == 0) return false;
            n += k;
        }
        return true;
    }

    // ------------------------------------------------------------------ gRPC calls with broken bodies

    private async Task<Result> GrpcAsync(Random r)
    {
        string path = r.Next(20) == 0 ? Pick(r, GatewayService + "Nope", "/llmcluster.v1.Nope/Generate", "/", "/llmcluster.v1.Gateway", "/" + Encoding.ASCII.GetString(Bytes(r, 10).Select(b => (byte)('a' + b % 26)).ToArray()))
            : Pick(r, GrpcMethods);
        int what = r.Next(10);
        string kind = what switch
        {
            0 => "random-bytes", 1 => "prefix+garbage", 2 => "prefix-longer-than-body", 3 => "compressed-garbage", 4 => "random-protobuf",
            5 => "random-protobuf", 6 => "mutated-valid", 7 => "two-messages", 8 => "empty", _ => "bad-flag",
        };
        byte[] body = what switch
        {
            0 => Bytes(r, 64),
            1 => Framed(Bytes(r, 128)),
            2 => [.. Prefix(Pick(r, 100u, 1u << 20, 16u << 20, 17u << 20, 0x7FFFFFFFu, 0x80000000u, uint.MaxValue, (uint)r.Next())), .. Bytes(r, 64)],
            3 => Framed(Bytes(r, 64), flag: 1),
            4 or 5 => Framed(Protobuf(r)),
            6 => Framed(Mutate(r, ValidRequest(r, path))),
            7 => [.. Framed(ValidRequest(r, path)), .. Framed(Protobuf(r))],
            8 => [],
            _ => Framed(Protobuf(r), flag: (byte)r.Next(2, 256)),
        };
        var request = new HttpRequestMessage(HttpMethod.Post, $"http://{_target.Host}:{_target.GrpcPort}{path}")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        string contentType = r.Next(12) == 0 ? Pick(r, "application/json", "text/plain", "application/grpc-web", "application/grpc+json", "application/grpcx", "") : Pick(r, "application/grpc", "application/grpc+proto");
        if (contentType.Length > 0) request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        if (r.Next(4) > 0) request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        // A deadline on most calls, so a random request that happens to be valid cannot generate for long.
        request.Headers.TryAddWithoutValidation("grpc-timeout", r.Next(15) == 0 ? Pick(r, "abc", "99999999999H", "1n", "-5S", "", "100000000S", "0m") : "5S");
        if (what == 3 || r.Next(15) == 0) request.Headers.TryAddWithoutValidation("grpc-encoding", Pick(r, "gzip", "identity", "br", "deflate", "x-nope", ""));
        if (r.Next(20) == 0) request.Headers.TryAddWithoutValidation("grpc-accept-encoding", Pick(r, "gzip", "zzz", ","));
        if (r.Next(30) == 0) request.Headers.TryAddWithoutValidation(Pick(r, "x-session-id", "authorization", "grpc-previous-rpc-attempts", "traceparent"), Pick(r, "garbage", new string('z', 8000), "00-zz-zz-01", "-1"));
        var answers = new List<string>();
        (string, string, bool)? notable = null;
        using var cts = new CancellationTokenSource(RequestTimeout);
        try
        {
            using var response = await _grpcHttp!.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            await response.Content.CopyToAsync(Stream.Null, cts.Token);
            var status = response.Headers.TryGetValues("grpc-status", out var h) ? h.First()
                : response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.First() : null;
            var message = response.Headers.TryGetValues("grpc-message", out var hm) ? hm.First()
                : response.TrailingHeaders.TryGetValues("grpc-message", out var tm) ? tm.First() : "";
            message = Uri.UnescapeDataString(message ?? "");
            int http = (int)response.StatusCode;
            if (http != 200) answers.Add($"http:{http}");
            string answer = status is null ? "grpc:none" : int.TryParse(status, out var code) ? $"grpc:{(Grpc.Core.StatusCode)code}" : $"grpc:'{status}'";
            answers.Add(answer);
            if (http >= 500) notable = ($"http:{http}", message, true);
            else if (status == "13") notable = (answer, message, IsUnexpected(message));
            else if (status == "2") notable = (answer, message, false); // Grpc.AspNetCore's own (tests/Cluster.Grpc.Tests MalformedInputTests)
        }
        catch (OperationCanceledException) { answers.Add("timeout"); notable = ("timeout", $"no answer within {RequestTimeout.TotalSeconds:F0} s", true); }
        catch (HttpRequestException e) { answers.Add($"error:{e.HttpRequestError}"); }
        catch (IOException) { answers.Add("io-error"); }
        return new Result(kind, [.. Encoding.ASCII.GetBytes($"{path} {contentType} "), .. body], answers, notable);
    }

    /// <summary>
    /// INTERNAL is the spec's status for a message the server cannot parse or decompress (Grpc.AspNetCore
    /// and <see cref="Cluster.Serving.Hosting.StatusMapping"/> say so in their own words); an INTERNAL
    /// that StatusMapping gave an unexpected exception ("internal error (Type)") is a server bug.
    /// </summary>
    private static bool IsUnexpected(string message) => message.StartsWith("internal error (", StringComparison.Ordinal) || message.Contains("Exception", StringComparison.Ordinal);

    private static byte[] Prefix(uint length, byte flag = 0) => [flag, (byte)(length >> 24), (byte)(length >> 16), (byte)(length >> 8), (byte)length];
    private static byte[] Framed(byte[] message, byte flag = 0) => [.. Prefix((uint)message.Length, flag), .. message];

    private static byte[] Mutate(Random r, byte[] valid)
    {
        var b = (byte[])valid.Clone();
        switch (r.Next(3))
        {
            case 0: if (b.Length > 0) for (int k = r.Next(1, 4); k > 0; k--) b[r.Next(b.Length)] ^= (byte)(1 << r.Next(8)); return b;
            case 1: return b[..r.Next(b.Length + 1)];
            default: return [.. b, .. Bytes(r, 8)];
        }
    }

    private static byte[] ValidRequest(Random r, string path)
    {
        Google.Protobuf.IMessage m = path switch
        {
            GatewayService + "Generate" => new LlmCluster.V1.GenerateRequest
            {
                Text = Pick(r, "Once upon a time", "", new string('a', r.Next(0, 2000))),
                Sampling = new LlmCluster.V1.SamplingParams { MaxTokens = Pick(r, 1, 2, 0, -1, int.MaxValue), Temperature = Pick(r, 0f, 1f, float.NaN, -1f, float.PositiveInfinity), TopK = Pick(r, 0, -5, 1) },
                KvPolicy = PolicyOrNull(r),
                SessionId = Pick(r, "", "s", new string('s', 300), "\u0000"),
            },
            GatewayService + "Resume" => new LlmCluster.V1.ResumeRequest { SessionId = Pick(r, "", "nope", "\u0000"), AfterIndex = Pick(r, -1L, 0L, long.MaxValue, long.MinValue) },
            GatewayService + "Abort" => new LlmCluster.V1.AbortRequest { SessionId = Pick(r, "", "nope") },
            GatewayService + "DeleteSession" => new LlmCluster.V1.DeleteSessionRequest { SessionId = Pick(r, "", "nope") },
            GatewayService + "ListSessions" => new LlmCluster.V1.ListSessionsRequest(),
            _ => new LlmCluster.V1.HealthRequest(),
        };
        return Google.Protobuf.MessageExtensions.ToByteArray(m);
    }

    private static LlmCluster.V1.KvPolicy? PolicyOrNull(Random r)
    {
        if (r.Next(3) == 0) return null;
        try { return LlmCluster.V1.KvPolicy.Parser.ParseFrom(Protobuf(r)); } // random fields, often none of the oneof
        catch (Google.Protobuf.InvalidProtocolBufferException) { return new LlmCluster.V1.KvPolicy(); }
    }

    // ------------------------------------------------------------------ raw HTTP/1.1 to the OpenAI API

    private string _modelJson = "\"\"";

    private async Task<Result> Http1Async(Random r)
    {
        string path = Pick(r, "/v1/completions", "/v1/completions", "/v1/chat/completions", "/v1/chat/completions", "/v1/models",
            "/v1/models/" + Uri.EscapeDataString(Encoding.Latin1.GetString(Bytes(r, 12))), "/v1/completions?x=%ZZ", "/v1//completions", "/v1/chat/completions/");
        bool chat = path.Contains("chat", StringComparison.Ordinal);
        string method = r.Next(10) == 0 ? Pick(r, "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO") : path.StartsWith("/v1/models", StringComparison.Ordinal) ? "GET" : "POST";
        string contentType = "application/json";
        string? contentLength = null; // null: the body's length
        bool chunked = false, closeWrite = false, rawHead = false;
        int what = r.Next(12);
        string kind;
        byte[] body;
        switch (what)
        {
            case 0: case 1: case 2: kind = "json-request"; body = Encoding.UTF8.GetBytes(JsonRequest(r, chat, _modelJson)); break;
            case 3: kind = "deep-nesting"; body = Encoding.UTF8.GetBytes(Deep(r, _modelJson)); break;
            case 4:
                kind = "huge-numbers";
                body = Encoding.UTF8.GetBytes($"{{\"model\":{_modelJson},\"{(chat ? "messages" : "prompt")}\":{(chat ? "[{\"role\":\"user\",\"content\":\"hi\"}]" : "\"Once\"")},\"{Pick(r, "max_tokens", "temperature", "top_p", "n", "seed", "top_k", "logprobs", "presence_penalty", "min_tokens", "top_logprobs")}\":{JsonNumber(r)}}}");
                break;
            case 5: kind = "invalid-utf8"; body = InvalidUtf8(r, _modelJson); break;
            case 6: { kind = "truncated"; var full = Encoding.UTF8.GetBytes(JsonRequest(r, chat, _modelJson)); body = full[..r.Next(full.Length)]; break; }
            case 7: kind = "random-bytes"; body = Bytes(r, 200); break;
            case 8:
                kind = "wrong-content-type";
                body = Encoding.UTF8.GetBytes("{\"model\":" + _modelJson + ",\"prompt\":\"Once\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}");
                contentType = Pick(r, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/json; charset=latin1", "application/json; charset=utf-16", "*/*", "\u00ff");
                break;
            case 9:
                kind = "huge-content-length";
                body = Encoding.UTF8.GetBytes(JsonRequest(r, chat, _modelJson))[..];
                contentLength = Pick(r, "1000000000000", "9223372036854775807", "9223372036854775808", "-1", "abc", "1e3", (body.Length + r.Next(1, 100_000)).ToString(), "4294967296", "10, 10");
                closeWrite = true;
                break;
            case 10:
                kind = "chunked-garbage";
                chunked = true;
                body = Encoding.ASCII.GetBytes(Pick(r, "zz\r\n{}\r\n0\r\n\r\n", "FFFFFFFFFFFFFFFF\r\nab\r\n", "5\r\n{\"a\":\r\n", "-1\r\n\r\n", "2;ext=\u0001\r\n{}\r\n0\r\n\r\n", "3\r\n{}\r\n0\r\n\r\n"));
                closeWrite = true;
                break;
            default:
                kind = "garbage-head";
                rawHead = true;
                body = Encoding.Latin1.GetBytes(Pick(r,
                    $"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{{}}",
                    $"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n",
                    $"POST {path} HTTP/9.9\r\nHost: x\r\n\r\n",
                    $"POST {path}\r\n\r\n",
                    $"POST {path} HTTP/1.1\r\nHost: x\r\nX: {new string('a', r.Next(1, 40_000))}\r\nConnection: close\r\n\r\n",
                    $"POST {path} HTTP/1.1\r\nHost: x\r\nBad Header\r\nConnection: close\r\n\r\n",
                    $"POST {path} HTTP/1.1\r\nHost: x\r\nX: \u0001\u007f\u00ff\r\nConnection: close\r\n\r\n",
                    $"\u0000\u0001 {path} HTTP/1.1\r\n\r\n",
                    "GET " + new string('/', r.Next(1, 20_000)) + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    Encoding.Latin1.GetString(Bytes(r, 100)) + "\r\n\r\n"));
                closeWrite = true;
                break;
        }
        byte[] input;
        if (rawHead) input = body;
        else
        {
            var head = new StringBuilder($"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{_target.HttpPort}\r\n");
            if (contentType.Length > 0 && r.Next(20) > 0) head.Append("Content-Type: ").Append(contentType).Append("\r\n");
            if (chunked) head.Append("Transfer-Encoding: chunked\r\n");
            else if (method != "GET" || r.Next(4) == 0) head.Append("Content-Length: ").Append(contentLength ?? body.Length.ToString()).Append("\r\n");
            head.Append("Connection: close\r\n\r\n");
            input = [.. Encoding.Latin1.GetBytes(head.ToString()), .. (method == "GET" && !head.ToString().Contains("Content-Length") ? [] : body)];
        }
        var answers = new List<string>();
        (string, string, bool)? notable = null;
        using var cts = new CancellationTokenSource(RequestTimeout);
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(_target.Host, _target.HttpPort, cts.Token);
            using var net = new NetworkStream(socket, ownsSocket: false);
            try { await net.WriteAsync(input, cts.Token); }
            catch (IOException) { answers.Add("write-failed"); }
            var received = new MemoryStream();
            var buffer = new byte[16384];
            // A body that may be incomplete (a length or chunk that promises more): the server gets a moment to
            // refuse what it has, then the client stops sending, as a client that gave up would.
            var first = net.ReadAsync(buffer, cts.Token).AsTask();
            if (closeWrite && await Task.WhenAny(first, Task.Delay(150, cts.Token)) != first)
            {
                try { socket.Shutdown(SocketShutdown.Send); } catch (SocketException) { }
            }
            for (int k = await first; k > 0; k = await net.ReadAsync(buffer, cts.Token)) if (received.Length < 65536) received.Write(buffer, 0, k);
            var text = Encoding.Latin1.GetString(received.GetBuffer(), 0, (int)received.Length);
            if (text.Length >= 12 && text.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && int.TryParse(text.AsSpan(9, 3), out var status))
            {
                answers.Add($"http:{status}");
                if (status == 505) notable = ("http:505", "HTTP version not supported (RFC 9110 15.6.6: the right answer to an unknown version)", false);
                else if (status >= 500)
                {
                    int bodyAt = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                    notable = ($"http:{status}", bodyAt < 0 ? "" : Truncate(text[(bodyAt + 4)..], 300), true);
                }
            }
            else answers.Add(text.Length == 0 ? closeWrite ? "closed-no-answer(client stopped sending)" : "closed-no-answer" : "not-http");
        }
        catch (OperationCanceledException) { answers.Add("timeout"); notable = ("timeout", $"no answer within {RequestTimeout.TotalSeconds:F0} s", true); }
        catch (Exception e) when (e is IOException or SocketException) { answers.Add("reset"); }
        return new Result(kind, input, answers, notable);
    }

    private static string Truncate(string s, int n) => s.Length <= n ? s : s[..n] + "...";

    /// <summary>The input as text where it is printable, \xNN elsewhere; at most 240 characters.</summary>
    public static string Preview(byte[] input)
    {
        var sb = new StringBuilder();
        foreach (var b in input.Take(240)) sb.Append(b is >= 32 and < 127 && b != '\\' ? ((char)b).ToString() : $"\\x{b:x2}");
        if (input.Length > 240) sb.Append($"... ({input.Length} bytes)");
        return sb.ToString();
    }

    public void Dispose()
    {
        _check.Dispose();
        _channel.Dispose();
        _checking.Dispose();
    }
}
