using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;

namespace Cluster.Grpc.Tests.Server;

/// <summary>Hand-made HTTP/2 (h2c) requests, to send a gRPC server what no gRPC client would.</summary>
public static class RawHttp2
{
    public sealed record Result(HttpStatusCode HttpStatus, string? GrpcStatus, string? GrpcMessage, bool TrailersOnly, HttpResponseMessage Response);

    public static HttpClient CreateClient() => new(new SocketsHttpHandler()) { Timeout = TimeSpan.FromSeconds(20) };

    /// <summary>A frame header: compressed flag and big-endian length, as the spec lays it out.</summary>
    public static byte[] Prefix(uint length, byte flag = 0)
    {
        var header = new byte[5];
        header[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(1), length);
        return header;
    }

    public static byte[] Frame(byte[] payload, byte flag = 0) => [.. Prefix((uint)payload.Length, flag), .. payload];

    public static async Task<Result> SendAsync(HttpClient http, int port, string path, byte[] body,
        string? contentType = "application/grpc", HttpMethod? method = null, IEnumerable<(string, string)>? headers = null)
    {
        var request = new HttpRequestMessage(method ?? HttpMethod.Post, $"http://127.0.0.1:{port}{path}")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (method != HttpMethod.Get)
        {
            request.Content = new ByteArrayContent(body);
            if (contentType is not null) request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        }
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        foreach (var (k, v) in headers ?? []) request.Headers.TryAddWithoutValidation(k, v);

        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await response.Content.ReadAsByteArrayAsync(); // to the end, so trailers are in
        var inHeaders = response.Headers.TryGetValues("grpc-status", out var h) ? h.First() : null;
        var inTrailers = response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.First() : null;
        var message = response.Headers.TryGetValues("grpc-message", out var hm) ? hm.First()
            : response.TrailingHeaders.TryGetValues("grpc-message", out var tm) ? tm.First() : null;
        return new Result(response.StatusCode, inHeaders ?? inTrailers, message, inHeaders is not null, response);
    }
}
