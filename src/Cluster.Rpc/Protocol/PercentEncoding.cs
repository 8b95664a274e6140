using System.Text;

namespace Cluster.Rpc.Protocol;

/// <summary>
/// grpc-message encoding from the gRPC over HTTP/2 spec: the UTF-8 bytes of the message, where
/// every byte outside printable ASCII 0x20..0x7E, and '%' itself, is written as "%XX".
/// Decoding passes malformed escapes through unchanged, as the spec asks of receivers.
/// </summary>
internal static class PercentEncoding
{
    public static string Encode(string message)
    {
        var needs = false;
        foreach (var c in message) if (c is < ' ' or > '~' or '%') { needs = true; break; }
        if (!needs) return message;

        var bytes = Encoding.UTF8.GetBytes(message);
        var sb = new StringBuilder(bytes.Length * 3);
        foreach (var b in bytes)
        {
            if (b is < 0x20 or > 0x7E or (byte)'%') sb.Append('%').Append(b.ToString("X2"));
            else sb.Append((char)b);
        }
        return sb.ToString();
    }

    public static string Decode(string value)
    {
        if (!value.Contains('%')) return value;
        var bytes = new List<byte>(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '%' && i + 2 < value.Length && IsHex(value[i + 1]) && IsHex(value[i + 2]))
            {
                bytes.Add(Convert.ToByte(value.Substring(i + 1, 2), 16));
                i += 2;
            }
            else
            {
                // Non-ASCII characters should not appear on the wire; keep them rather than fail.
                bytes.AddRange(Encoding.UTF8.GetBytes(value[i].ToString()));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool IsHex(char c) => c is >= '0' and <= '9' or >= 'a' and <= 'f' or >= 'A' and <= 'F';
}
