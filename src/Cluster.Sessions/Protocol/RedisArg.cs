using System.Globalization;
using System.Text;

namespace Cluster.Redis;

/// <summary>
/// One command argument: text (sent as UTF-8), raw bytes, or an integer (sent in decimal).
/// Implicit conversions let callers write <c>ExecuteAsync("SET", key, bytes, "PX", 1500)</c>.
/// </summary>
public readonly struct RedisArg
{
    private readonly string? _text;
    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly long _integer;
    private readonly byte _kind; // 0 text, 1 bytes, 2 integer

    private RedisArg(string? text, ReadOnlyMemory<byte> bytes, long integer, byte kind)
    {
        _text = text; _bytes = bytes; _integer = integer; _kind = kind;
    }

    public static implicit operator RedisArg(string text) => new(text ?? throw new ArgumentNullException(nameof(text)), default, 0, 0);
    public static implicit operator RedisArg(byte[] bytes) => new(null, bytes ?? throw new ArgumentNullException(nameof(bytes)), 0, 1);
    public static implicit operator RedisArg(ReadOnlyMemory<byte> bytes) => new(null, bytes, 0, 1);
    public static implicit operator RedisArg(long integer) => new(null, default, integer, 2);
    public static implicit operator RedisArg(int integer) => new(null, default, integer, 2);
    public static implicit operator RedisArg(double value) =>
        new(double.IsPositiveInfinity(value) ? "+inf" : double.IsNegativeInfinity(value) ? "-inf" : value.ToString("R", CultureInfo.InvariantCulture), default, 0, 0);

    /// <summary>Length of the argument's payload in bytes.</summary>
    internal int ByteCount => _kind switch
    {
        0 => Encoding.UTF8.GetByteCount(_text!),
        1 => _bytes.Length,
        _ => DigitCount(_integer),
    };

    internal int WriteTo(Span<byte> dest) => _kind switch
    {
        0 => Encoding.UTF8.GetBytes(_text!, dest),
        1 => CopyBytes(dest),
        _ => _integer.TryFormat(dest, out int written, default, CultureInfo.InvariantCulture) ? written : throw new InvalidOperationException(),
    };

    private int CopyBytes(Span<byte> dest)
    {
        _bytes.Span.CopyTo(dest);
        return _bytes.Length;
    }

    internal static int DigitCount(long v)
    {
        if (v == long.MinValue) return 20;
        int n = v < 0 ? 2 : 1;
        ulong u = (ulong)Math.Abs(v);
        while (u >= 10) { u /= 10; n++; }
        return n;
    }

    public override string ToString() => _kind switch
    {
        0 => _text!,
        1 => Encoding.UTF8.GetString(_bytes.Span),
        _ => _integer.ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// Encodes a command as the RESP array of bulk strings that clients send
/// (spec: "Sending commands to a Redis server"). The length is computed first so the buffer
/// is rented once at the exact size and never grows.
/// </summary>
public static class RespCommandWriter
{
    /// <summary>Exact encoded size of <paramref name="args"/>; also validates that there is at least one.</summary>
    public static int GetEncodedLength(ReadOnlySpan<RedisArg> args)
    {
        if (args.Length == 0) throw new ArgumentException("a command needs at least its name", nameof(args));
        long total = 1 + RedisArg.DigitCount(args.Length) + 2;              // *<n>\r\n
        foreach (var a in args)
        {
            int len = a.ByteCount;
            total += 1 + RedisArg.DigitCount(len) + 2 + len + 2;             // $<len>\r\n<data>\r\n
        }
        if (total > int.MaxValue) throw new ArgumentException("command too large", nameof(args));
        return (int)total;
    }

    /// <summary>Writes the command into <paramref name="dest"/>, which must hold <see cref="GetEncodedLength"/> bytes.</summary>
    public static int Write(ReadOnlySpan<RedisArg> args, Span<byte> dest)
    {
        int p = WriteHeader(dest, (byte)'*', args.Length);
        foreach (var a in args)
        {
            int len = a.ByteCount;
            p += WriteHeader(dest[p..], (byte)'$', len);
            p += a.WriteTo(dest[p..]);
            dest[p++] = (byte)'\r';
            dest[p++] = (byte)'\n';
        }
        return p;
    }

    private static int WriteHeader(Span<byte> dest, byte prefix, int n)
    {
        dest[0] = prefix;
        n.TryFormat(dest[1..], out int w, default, CultureInfo.InvariantCulture);
        dest[1 + w] = (byte)'\r';
        dest[2 + w] = (byte)'\n';
        return w + 3;
    }
}
