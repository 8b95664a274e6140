using System.Buffers;
using Cluster.Rpc.Protocol;
using Xunit;

namespace Cluster.Rpc.Tests.Protocol;

/// <summary>Exact unit tests of the wire helpers against the gRPC over HTTP/2 spec.</summary>
public sealed class ProtocolTests
{
    [Theory]
    [InlineData("1H", 36_000_000_000L)]
    [InlineData("2M", 1_200_000_000L)]
    [InlineData("5S", 50_000_000L)]
    [InlineData("5010m", 50_100_000L)]
    [InlineData("250u", 2_500L)]
    [InlineData("1n", 1L)] // rounded up to one tick, never to zero
    [InlineData("99999999S", 999_999_990_000_000L)]
    public void Timeout_parses(string header, long ticks)
    {
        Assert.True(GrpcTimeout.TryParse(header, out var t));
        Assert.Equal(ticks, t.Ticks);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("S", "no digits")]
    [InlineData("10", "no unit")]
    [InlineData("123456789S", "9 digits")]
    [InlineData("-5S", "sign")]
    [InlineData("5s", "lower-case s is not a unit")]
    [InlineData("1.5S", "fraction")]
    public void Timeout_rejects(string header, string reason)
    {
        Assert.False(GrpcTimeout.TryParse(header, out _), reason);
    }

    [Theory]
    [InlineData(1L, "100n")]
    [InlineData(5_000_000L, "500000u")]
    [InlineData(50_000_000L, "5000000u")]
    [InlineData(36_000_000_000L, "3600000m")]
    public void Timeout_formats_in_8_digits_rounding_up(long ticks, string expected)
    {
        var text = GrpcTimeout.Format(TimeSpan.FromTicks(ticks));
        Assert.Equal(expected, text);
        Assert.True(GrpcTimeout.TryParse(text, out var back) && back.Ticks >= ticks);
    }

    [Fact]
    public void Timeout_format_of_huge_value_fits()
    {
        Assert.True(GrpcTimeout.TryParse(GrpcTimeout.Format(TimeSpan.FromDays(36500)), out _));
    }

    [Theory]
    [InlineData("plain message", "plain message")]
    [InlineData("100%", "100%25")]
    [InlineData("a\tb", "a%09b")]
    [InlineData("\u263A", "%E2%98%BA")]
    public void Message_percent_encoding(string message, string wire)
    {
        Assert.Equal(wire, PercentEncoding.Encode(message));
        Assert.Equal(message, PercentEncoding.Decode(wire));
    }

    [Theory]
    [InlineData("%", "%")]
    [InlineData("%G1x", "%G1x")]
    [InlineData("abc%4", "abc%4")]
    public void Malformed_percent_escapes_pass_through(string wire, string message)
    {
        Assert.Equal(message, PercentEncoding.Decode(wire));
    }

    [Fact]
    public void Frame_reader_needs_whole_frames()
    {
        byte[] frame = [0, 0, 0, 0, 3, 7, 8, 9, 0, 0];
        for (var n = 0; n < 8; n++)
        {
            var partial = new ReadOnlySequence<byte>(frame, 0, n);
            Assert.False(GrpcFraming.TryReadFrame(ref partial, 100, out _, out _), $"{n} bytes");
        }
        var buffer = new ReadOnlySequence<byte>(frame);
        Assert.True(GrpcFraming.TryReadFrame(ref buffer, 100, out var compressed, out var payload));
        Assert.False(compressed);
        Assert.Equal(new byte[] { 7, 8, 9 }, payload.ToArray());
        Assert.Equal(2, buffer.Length); // the next frame's first bytes stay
    }

    [Fact]
    public void Frame_reader_refuses_oversize_from_the_prefix_alone()
    {
        var buffer = new ReadOnlySequence<byte>(new byte[] { 0, 0, 0, 1, 0 }); // declares 256 bytes, none present
        var ex = Assert.Throws<RpcException>(() => GrpcFraming.TryReadFrame(ref buffer, 255, out _, out _));
        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
    }

    [Fact]
    public void Content_type_check()
    {
        Assert.True(GrpcProtocol.IsGrpcContentType("application/grpc"));
        Assert.True(GrpcProtocol.IsGrpcContentType("application/grpc+proto"));
        Assert.True(GrpcProtocol.IsGrpcContentType("application/grpc; charset=utf-8"));
        Assert.False(GrpcProtocol.IsGrpcContentType("application/grpc-web"));
        Assert.False(GrpcProtocol.IsGrpcContentType("application/json"));
        Assert.False(GrpcProtocol.IsGrpcContentType(null));
    }

    [Fact]
    public void Binary_metadata_accepts_padded_and_unpadded_base64()
    {
        var m = new Metadata();
        m.AddFromWire("x-bin", "q6s");
        m.AddFromWire("y-bin", "q6s=");
        Assert.Equal(new byte[] { 0xab, 0xab }, m.GetBytes("x-bin"));
        Assert.Equal(new byte[] { 0xab, 0xab }, m.GetBytes("y-bin"));
        Assert.Equal("q6s", Metadata.WireValue(new Metadata().Add("z-bin", [0xab, 0xab]).Single()));
    }
}
