using System.Globalization;
using System.Text;

namespace Cluster.Redis;

/// <summary>Bounds on what one reply may hold, so that a broken or hostile peer cannot make us allocate without limit.</summary>
/// <param name="MaxBulkBytes">Largest bulk, blob error or verbatim string.</param>
/// <param name="MaxElements">Largest element count of one aggregate (a map counts its pairs).</param>
/// <param name="MaxDepth">Deepest nesting of aggregates.</param>
public readonly record struct RespLimits(int MaxBulkBytes, int MaxElements, int MaxDepth)
{
    public static RespLimits Default => new(64 << 20, 1 << 20, 32);
}

/// <summary>
/// Parses one RESP2/RESP3 reply from the start of a buffer
/// (spec: https://redis.io/docs/latest/develop/reference/protocol-spec/).
/// <see cref="TryParse"/> returns false when the buffer holds only part of a reply ("need more
/// bytes") and throws <see cref="RedisProtocolException"/> only for input that can never become
/// valid, so the caller can read more and call again with the same start.
/// Not supported (Redis never sends them): streamed strings and aggregates (<c>$?</c>, <c>*?</c>).
/// </summary>
public static class RespParser
{
    /// <summary>Simple strings, errors and numbers are one line; anything longer than this is not a real reply.</summary>
    public const int MaxLineBytes = 64 * 1024;

    /// <summary>Parses one reply. <paramref name="consumed"/> is its length in bytes when this returns true.</summary>
    /// <exception cref="RedisProtocolException">The bytes are not valid RESP or exceed <paramref name="limits"/>.</exception>
    public static bool TryParse(ReadOnlySpan<byte> input, RespLimits limits, out RespValue? value, out int consumed)
    {
        int pos = 0;
        if (!TryParseValue(input, ref pos, limits, 0, out value))
        {
            consumed = 0;
            return false;
        }
        consumed = pos;
        return true;
    }

    private static bool TryParseValue(ReadOnlySpan<byte> s, ref int pos, in RespLimits limits, int depth, out RespValue? value)
    {
        value = null;
        if (pos >= s.Length) return false;
        if (depth > limits.MaxDepth) ThrowHelper.Protocol($"reply nested deeper than {limits.MaxDepth}");
        byte type = s[pos];
        int p = pos + 1;
        if (!TryReadLine(s, ref p, out var line)) return false;
        switch (type)
        {
            case (byte)'+': value = RespValue.String(RespType.SimpleString, line.ToArray()); break;
            case (byte)'-': value = RespValue.String(RespType.Error, line.ToArray()); break;
            case (byte)':': value = RespValue.FromInteger(ParseInteger(line)); break;
            case (byte)'_':
                if (!line.IsEmpty) ThrowHelper.Protocol("RESP3 null must be \"_\\r\\n\"");
                value = RespValue.NullValue;
                break;
            case (byte)'#':
                if (line.Length != 1 || (line[0] != (byte)'t' && line[0] != (byte)'f')) ThrowHelper.Protocol("RESP3 boolean must be #t or #f");
                value = RespValue.FromBoolean(line[0] == (byte)'t');
                break;
            case (byte)',': value = RespValue.FromDouble(ParseDouble(line)); break;
            case (byte)'(':
                ValidateBigNumber(line);
                value = RespValue.String(RespType.BigNumber, line.ToArray());
                break;
            case (byte)'$': case (byte)'!': case (byte)'=':
                {
                    long len = ParseLength(line, limits.MaxBulkBytes, allowNull: type == (byte)'$', "bulk length");
                    if (len < 0) { value = RespValue.NullValue; break; }
                    if (!TryReadBlob(s, ref p, (int)len, out var blob)) return false;
                    value = type switch
                    {
                        (byte)'$' => RespValue.String(RespType.BulkString, blob.ToArray()),
                        (byte)'!' => RespValue.String(RespType.Error, blob.ToArray()),
                        _ => ParseVerbatim(blob),
                    };
                    break;
                }
            case (byte)'*': case (byte)'~': case (byte)'>': case (byte)'%': case (byte)'|':
                {
                    long count = ParseLength(line, limits.MaxElements, allowNull: type == (byte)'*', "aggregate length");
                    if (count < 0) { value = RespValue.NullValue; break; }
                    int n = type is (byte)'%' or (byte)'|' ? (int)count * 2 : (int)count;
                    // Every element takes at least 3 bytes ("_\r\n"): if they cannot fit in what we hold,
                    // the reply is incomplete, and we avoid allocating for a count we cannot fill yet.
                    if ((long)n * 3 > s.Length - p) return false;
                    var items = n == 0 ? [] : new RespValue[n];
                    for (int i = 0; i < n; i++)
                        if (!TryParseValue(s, ref p, limits, depth + 1, out items[i]!)) return false;
                    if (type == (byte)'|')
                    {
                        // An attribute is out-of-band metadata followed by the real reply (spec: "Attribute type").
                        if (!TryParseValue(s, ref p, limits, depth, out var real)) return false;
                        real!.Attributes = RespValue.Aggregate(RespType.Map, items);
                        value = real;
                        break;
                    }
                    value = RespValue.Aggregate(type switch
                    {
                        (byte)'*' => RespType.Array,
                        (byte)'~' => RespType.Set,
                        (byte)'>' => RespType.Push,
                        _ => RespType.Map,
                    }, items);
                    break;
                }
            default:
                ThrowHelper.Protocol($"unknown RESP type byte 0x{type:x2}");
                break;
        }
        pos = p;
        return true;
    }

    /// <summary>Reads up to CRLF; false when no LF yet. A bare LF, or a CR not followed by LF, is malformed.</summary>
    private static bool TryReadLine(ReadOnlySpan<byte> s, ref int p, out ReadOnlySpan<byte> line)
    {
        var rest = s[p..];
        int lf = rest.IndexOf((byte)'\n');
        if (lf < 0)
        {
            line = default;
            if (rest.Length > MaxLineBytes) ThrowHelper.Protocol($"line longer than {MaxLineBytes} bytes");
            int cr = rest.IndexOf((byte)'\r');
            if (cr >= 0 && cr != rest.Length - 1) ThrowHelper.Protocol("CR not followed by LF");
            return false;
        }
        if (lf == 0 || rest[lf - 1] != (byte)'\r') ThrowHelper.Protocol("line ends with LF but no CR");
        line = rest[..(lf - 1)];
        if (line.IndexOf((byte)'\r') >= 0) ThrowHelper.Protocol("CR inside a line");
        p += lf + 1;
        return true;
    }

    private static bool TryReadBlob(ReadOnlySpan<byte> s, ref int p, int len, out ReadOnlySpan<byte> blob)
    {
        blob = default;
        if (s.Length - p < (long)len + 2)
        {
            // Fail early if what did arrive already shows a bad terminator.
            if (s.Length - p > len && s[p + len] != (byte)'\r') ThrowHelper.Protocol("bulk string not followed by CRLF");
            return false;
        }
        if (s[p + len] != (byte)'\r' || s[p + len + 1] != (byte)'\n') ThrowHelper.Protocol("bulk string not followed by CRLF");
        blob = s.Slice(p, len);
        p += len + 2;
        return true;
    }

    private static RespValue ParseVerbatim(ReadOnlySpan<byte> blob)
    {
        // Spec: "=<length>\r\n<encoding>:<data>\r\n", the encoding exactly three bytes.
        if (blob.Length < 4 || blob[3] != (byte)':') ThrowHelper.Protocol("verbatim string without a 3-byte format prefix");
        return RespValue.Verbatim(Encoding.ASCII.GetString(blob[..3]), blob[4..].ToArray());
    }

    /// <summary>A signed 64-bit decimal: optional sign, at least one digit, nothing else.</summary>
    internal static long ParseInteger(ReadOnlySpan<byte> line)
    {
        int i = 0;
        bool negative = false;
        if (line.Length > 0 && (line[0] == (byte)'-' || line[0] == (byte)'+')) { negative = line[0] == (byte)'-'; i = 1; }
        if (i == line.Length) ThrowHelper.Protocol("empty integer");
        ulong acc = 0;
        ulong limit = negative ? (ulong)long.MaxValue + 1 : long.MaxValue;
        for (; i < line.Length; i++)
        {
            uint d = (uint)(line[i] - '0');
            if (d > 9) ThrowHelper.Protocol("integer with a non-digit");
            if (acc > (limit - d) / 10) ThrowHelper.Protocol("integer out of 64-bit range");
            acc = acc * 10 + d;
        }
        return negative ? (long)(0 - acc) : (long)acc;
    }

    private static long ParseLength(ReadOnlySpan<byte> line, int max, bool allowNull, string what)
    {
        if (line.Length == 1 && line[0] == (byte)'?') ThrowHelper.Protocol("streamed RESP3 strings/aggregates are not supported");
        long n = ParseInteger(line);
        if (n == -1 && allowNull) return -1;
        if (n < 0) ThrowHelper.Protocol($"negative {what}");
        if (n > max) ThrowHelper.Protocol($"{what} {n} exceeds the limit {max}");
        return n;
    }

    internal static double ParseDouble(ReadOnlySpan<byte> line)
    {
        // Spec: ",inf", ",-inf" and ",nan" besides decimal numbers with an optional exponent.
        if (line.SequenceEqual("inf"u8) || line.SequenceEqual("+inf"u8)) return double.PositiveInfinity;
        if (line.SequenceEqual("-inf"u8)) return double.NegativeInfinity;
        if (line.SequenceEqual("nan"u8)) return double.NaN;
        if (line.IsEmpty || !(char.IsAsciiDigit((char)line[^1]) || line[^1] == (byte)'.')
            || !double.TryParse(line, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent,
                CultureInfo.InvariantCulture, out double v))
            return ThrowHelper.Protocol<double>("malformed double");
        return v;
    }

    private static void ValidateBigNumber(ReadOnlySpan<byte> line)
    {
        int i = line.Length > 0 && (line[0] == (byte)'-' || line[0] == (byte)'+') ? 1 : 0;
        if (i == line.Length) ThrowHelper.Protocol("empty big number");
        for (; i < line.Length; i++)
            if ((uint)(line[i] - '0') > 9) ThrowHelper.Protocol("big number with a non-digit");
    }
}
