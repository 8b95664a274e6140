using System.IO.Compression;
using System.Net;
using Cluster.Grpc.Tests.Interop;
using Cluster.Interop;
using Cluster.Serving.Routing;
using Google.Protobuf;
using Xunit;

namespace Cluster.Grpc.Tests.Server;

/// <summary>
/// What a broken or hostile peer can send: each request gets the status the gRPC over HTTP/2
/// spec prescribes, promptly, and the server goes on serving (checked after every case).
/// </summary>
public sealed class MalformedInputTests(OurServerFixture server) : IClassFixture<OurServerFixture>, IDisposable
{
    private const string Unary = "/cluster.interop.TestService/UnaryCall";
    private readonly HttpClient _http = RawHttp2.CreateClient();

    private static byte[] ValidRequest => new SimpleRequest { ResponseSize = 3 }.ToByteArray();

    /// <summary>
    /// Grpc.AspNetCore 2.85 reads a unary request before any interceptor runs, and a read that fails
    /// with an exception other than its own RpcException (InvalidDataException for a bad flag or a length
    /// over 2 GiB, InvalidProtocolBufferException from the parser) ends as UNKNOWN "Exception was thrown
    /// by handler." where the spec's status table says INTERNAL (or RESOURCE_EXHAUSTED for a message over
    /// the limit). Still a clean status and the server keeps serving; pinned here at UNKNOWN so that a
    /// Grpc.AspNetCore that follows the spec makes this test fail and the expectation gets tightened.
    /// </summary>
    private const string UnknownNotSpec = "2";

    public static TheoryData<string, byte[], string> BadBodies => new()
    {
        // name, body, expected grpc-status (the spec's, except where marked UnknownNotSpec)
        { "truncated frame: prefix says 100 bytes, 10 follow", [.. RawHttp2.Prefix(100), .. new byte[10]], "13" },
        { "truncated prefix: 3 of 5 bytes", [0, 0, 0], "13" },
        { "length prefix over the 16 MiB limit", RawHttp2.Prefix(17 << 20), "8" },
        { "length prefix 0xFFFFFFFF", RawHttp2.Prefix(uint.MaxValue), UnknownNotSpec }, // spec: 8
        { "garbage: compressed flag 0xFF", [0xFF, 0xFE, 0x01, 0x02, 0x03, 0x04, 0x05], UnknownNotSpec }, // spec: 13
        { "garbage: payload is no protobuf", RawHttp2.Frame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), UnknownNotSpec }, // spec: 13
        { "compressed flag with no grpc-encoding", RawHttp2.Frame(ValidRequest, flag: 1), "13" },
        { "no message for a unary method", [], "13" },
        { "two messages for a unary method", [.. RawHttp2.Frame(ValidRequest), .. RawHttp2.Frame(ValidRequest)], "13" },
    };

    /// <summary>The same garbage on a client-streaming method is read inside the handler, so it goes through
    /// ServerCallInterceptor and StatusMapping: INTERNAL, as the spec says.</summary>
    [SkippableFact(Timeout = 30_000)]
    public async Task Unparsable_message_on_a_client_stream_is_internal()
    {
        var result = await RawHttp2.SendAsync(_http, server.Port, "/cluster.interop.TestService/StreamingInputCall", RawHttp2.Frame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]));
        Assert.Equal(HttpStatusCode.OK, result.HttpStatus);
        Assert.True(result.GrpcStatus == "13", $"grpc-status {result.GrpcStatus} ({result.GrpcMessage})");
        await AssertStillServing();
    }

    [SkippableTheory(Timeout = 30_000)]
    [MemberData(nameof(BadBodies))]
    public async Task Bad_body_gets_status_and_server_keeps_serving(string name, byte[] body, string grpcStatus)
    {
        var result = await RawHttp2.SendAsync(_http, server.Port, Unary, body);
        Assert.True(result.HttpStatus == HttpStatusCode.OK, name);
        Assert.True(grpcStatus == result.GrpcStatus, $"{name}: grpc-status {result.GrpcStatus} ({result.GrpcMessage})");
        Assert.True(result.TrailersOnly, $"{name}: an immediate error is a trailers-only response");
        await AssertStillServing();
    }

    [SkippableFact(Timeout = 60_000)]
    public async Task Random_bodies_never_crash_or_hang_the_server()
    {
        // A bounded fuzz loop with a fixed seed: every answer is a status, never a hang or a reset.
        var random = new Random(6);
        for (var i = 0; i < 200; i++)
        {
            var body = new byte[random.Next(0, 64)];
            random.NextBytes(body);
            if (i % 2 == 0 && body.Length > 0) body[0] = 0; // half of them pass the flag check
            var result = await RawHttp2.SendAsync(_http, server.Port, Unary, body);
            Assert.Equal(HttpStatusCode.OK, result.HttpStatus);
            Assert.Contains(result.GrpcStatus, new[] { "0", UnknownNotSpec, "8", "13" });
        }
        await AssertStillServing();
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Wrong_content_type_is_415()
    {
        var result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(ValidRequest), contentType: "application/json");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, result.HttpStatus);
        result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(ValidRequest), contentType: "application/grpc-web");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, result.HttpStatus);
        await AssertStillServing();
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Non_post_is_not_served()
    {
        // gRPC methods are POST only; the spec names no status for other methods. Grpc.AspNetCore maps
        // its endpoints for POST, so routing answers 404 (our old server said 405): either is a refusal.
        var result = await RawHttp2.SendAsync(_http, server.Port, Unary, [], method: HttpMethod.Get);
        Assert.Contains(result.HttpStatus, new[] { HttpStatusCode.NotFound, HttpStatusCode.MethodNotAllowed });
        Assert.Null(result.GrpcStatus);
        result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(ValidRequest), method: HttpMethod.Put);
        Assert.Contains(result.HttpStatus, new[] { HttpStatusCode.NotFound, HttpStatusCode.MethodNotAllowed });
        await AssertStillServing();
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Unknown_method_is_trailers_only_unimplemented()
    {
        var result = await RawHttp2.SendAsync(_http, server.Port, "/no.Such/Method", RawHttp2.Frame([]));
        Assert.Equal(HttpStatusCode.OK, result.HttpStatus);
        Assert.Equal("12", result.GrpcStatus);
        Assert.True(result.TrailersOnly);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Gzip_message_is_accepted_and_unknown_encoding_is_unimplemented()
    {
        using var compressed = new MemoryStream();
        using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true)) gzip.Write(ValidRequest);
        var result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(compressed.ToArray(), flag: 1), headers: [("grpc-encoding", "gzip")]);
        Assert.Equal("0", result.GrpcStatus);

        result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(ValidRequest, flag: 1), headers: [("grpc-encoding", "br")]);
        Assert.Equal("12", result.GrpcStatus);
        Assert.Contains("gzip", result.Response.Headers.GetValues("grpc-accept-encoding").First());

        // A gzip bomb: small on the wire, over the limit once inflated.
        using var bomb = new MemoryStream();
        using (var gzip = new GZipStream(bomb, CompressionLevel.SmallestSize, leaveOpen: true)) gzip.Write(new byte[17 << 20]);
        result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(bomb.ToArray(), flag: 1), headers: [("grpc-encoding", "gzip")]);
        Assert.Equal("8", result.GrpcStatus);
        await AssertStillServing();
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Malformed_grpc_timeout_is_ignored()
    {
        var result = await RawHttp2.SendAsync(_http, server.Port, Unary, RawHttp2.Frame(ValidRequest), headers: [("grpc-timeout", "soon")]);
        Assert.Equal("0", result.GrpcStatus);
    }

    [SkippableFact(Timeout = 30_000)]
    public async Task Client_that_vanishes_mid_message_leaves_server_serving()
    {
        // Half a frame, then the request is abandoned: the server must not wait on it forever.
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var content = new StalledContent([.. RawHttp2.Prefix(1000), 1, 2, 3]).WithType();
        var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{server.Port}{Unary}")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _http.SendAsync(request, cts.Token));
        await AssertStillServing();
    }

    private async Task AssertStillServing()
    {
        using var channel = GrpcChannels.Create(server.Host.GrpcAddress);
        var response = await new TestService.TestServiceClient(channel).UnaryCallAsync(new SimpleRequest { ResponseSize = 7 }, deadline: DateTime.UtcNow.AddSeconds(10));
        Assert.Equal(7, response.Payload.Body.Length);
    }

    public void Dispose() => _http.Dispose();

    /// <summary>Sends some bytes, then never finishes the body.</summary>
    private sealed class StalledContent(byte[] head) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(head, cancellationToken);
            await stream.FlushAsync(cancellationToken);
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }

        public StalledContent WithType()
        {
            Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
            return this;
        }
    }
}
