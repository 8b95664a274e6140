using System.Buffers.Binary;
using System.Text;

namespace LlmCtl.Fuzz;

/// <summary>
/// Just enough HTTP/2 (RFC 9113) to write any frame, well-formed or not, and to read the server's:
/// a frame header is a 24-bit length, an 8-bit type, 8-bit flags and a 31-bit stream id; header
/// blocks are written as HPACK literals without indexing or Huffman (RFC 7541 6.2.2), which every
/// decoder must accept.
/// </summary>
public static class Http2Frames
{
    public static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    public const byte Data = 0, Headers = 1, Priority = 2, RstStream = 3, Settings = 4, PushPromise = 5,
        Ping = 6, GoAway = 7, WindowUpdate = 8, Continuation = 9;
    public const byte EndStream = 0x1, Ack = 0x1, EndHeaders = 0x4, Padded = 0x8, PriorityFlag = 0x20;

    /// <summary>A frame header declaring <paramref name="length"/> (only its low 24 bits are sent).</summary>
    public static byte[] Header(int length, byte type, byte flags, int streamId)
    {
        var h = new byte[9];
        h[0] = (byte)(length >> 16); h[1] = (byte)(length >> 8); h[2] = (byte)length;
        h[3] = type; h[4] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(5), (uint)streamId); // the reserved bit too, if asked
        return h;
    }

    public static byte[] Frame(byte type, byte flags, int streamId, ReadOnlySpan<byte> payload) =>
        [.. Header(payload.Length, type, flags, streamId), .. payload];

    public static byte[] SettingsFrame(params (ushort Id, uint Value)[] settings)
    {
        var p = new byte[6 * settings.Length];
        for (int i = 0; i < settings.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6 * i), settings[i].Id);
            BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(6 * i + 2), settings[i].Value);
        }
        return Frame(Settings, 0, 0, p);
    }

    public static byte[] U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }

    /// <summary>An HPACK block of literal fields without indexing, new names, no Huffman.</summary>
    public static byte[] Hpack(params (string Name, string Value)[] fields)
    {
        var o = new List<byte>();
        foreach (var (name, value) in fields)
        {
            o.Add(0x00);
            String(o, name);
            String(o, value);
        }
        return [.. o];

        static void String(List<byte> o, string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Integer(o, 0x00, 7, bytes.Length);
            o.AddRange(bytes);
        }
    }

    /// <summary>An HPACK integer with an N-bit prefix (RFC 7541 5.1).</summary>
    public static void Integer(List<byte> o, byte high, int prefixBits, int value)
    {
        int max = (1 << prefixBits) - 1;
        if (value < max) { o.Add((byte)(high | value)); return; }
        o.Add((byte)(high | max));
        value -= max;
        while (value >= 128) { o.Add((byte)(value % 128 + 128)); value /= 128; }
        o.Add((byte)value);
    }

    /// <summary>Request headers of a gRPC call to <paramref name="path"/>.</summary>
    public static byte[] GrpcRequestHeaders(string path, string authority) => Hpack(
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers"));

    public static string ErrorName(uint code) => code switch
    {
        0 => "NO_ERROR", 1 => "PROTOCOL_ERROR", 2 => "INTERNAL_ERROR", 3 => "FLOW_CONTROL_ERROR",
        4 => "SETTINGS_TIMEOUT", 5 => "STREAM_CLOSED", 6 => "FRAME_SIZE_ERROR", 7 => "REFUSED_STREAM",
        8 => "CANCEL", 9 => "COMPRESSION_ERROR", 10 => "CONNECT_ERROR", 11 => "ENHANCE_YOUR_CALM",
        12 => "INADEQUATE_SECURITY", 13 => "HTTP_1_1_REQUIRED", _ => $"0x{code:x}",
    };

    /// <summary>
    /// The :status of a response header block when it is its first field, as Kestrel writes it: a static
    /// table entry (200, 204, 206, 304, 400, 404, 500) or a literal value under the static name :status
    /// (index 8) without Huffman; null when the block starts otherwise.
    /// </summary>
    public static int? LeadingStatus(ReadOnlySpan<byte> block)
    {
        if (block.Length == 0) return null;
        byte b = block[0];
        if ((b & 0x80) != 0)
            return (b & 0x7F) switch { 8 => 200, 9 => 204, 10 => 206, 11 => 304, 12 => 400, 13 => 404, 14 => 500, _ => null };
        // Literal with indexed name: 01xxxxxx (incremental, 6-bit index), 0000xxxx / 0001xxxx (4-bit index).
        int index = (b & 0xC0) == 0x40 ? b & 0x3F : (b & 0xE0) == 0 ? b & 0x0F : -1;
        if (index is < 8 or > 14 || block.Length < 5 || (block[1] & 0x80) != 0 || block[1] != 3) return null;
        return int.TryParse(Encoding.ASCII.GetString(block.Slice(2, 3)), out var s) ? s : null;
    }
}
