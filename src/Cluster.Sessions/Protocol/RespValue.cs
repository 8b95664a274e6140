using System.Globalization;
using System.Text;

namespace Cluster.Redis;

/// <summary>
/// RESP data types, RESP2 and RESP3 (https://redis.io/docs/latest/develop/reference/protocol-spec/).
/// RESP2's null bulk string (<c>$-1</c>) and null array (<c>*-1</c>) both become <see cref="Null"/>.
/// </summary>
public enum RespType : byte
{
    SimpleString, Error, Integer, BulkString, Array, Null,
    Boolean, Double, BigNumber, VerbatimString, Map, Set, Push,
}

/// <summary>
/// One parsed reply. Strings keep their raw bytes (RESP strings are binary-safe); aggregates keep
/// their children in <see cref="Items"/>; a map is flattened to key, value, key, value.
/// A RESP3 attribute (<c>|</c>) that precedes a reply is attached to it as <see cref="Attributes"/>.
/// </summary>
public sealed class RespValue
{
    public static readonly RespValue NullValue = new(RespType.Null);
    private static readonly RespValue[] NoItems = [];

    private RespValue(RespType type) => Type = type;

    public RespType Type { get; }
    /// <summary>Payload of string-like types (simple, error, bulk, verbatim without its "txt:" prefix, big number digits).</summary>
    public ReadOnlyMemory<byte> Bytes { get; private init; }
    public long Integer { get; private init; }
    public double Double { get; private init; }
    public bool Boolean { get; private init; }
    /// <summary>Children of Array, Set, Push and Map (flattened pairs); empty otherwise.</summary>
    public RespValue[] Items { get; private init; } = NoItems;
    /// <summary>Three-letter format of a verbatim string ("txt", "mkd").</summary>
    public string? Format { get; private init; }
    /// <summary>RESP3 attributes sent before this reply (flattened pairs), or null.</summary>
    public RespValue? Attributes { get; internal set; }

    public bool IsNull => Type == RespType.Null;

    public static RespValue String(RespType type, byte[] bytes) => new(type) { Bytes = bytes };
    public static RespValue Verbatim(string format, byte[] bytes) => new(RespType.VerbatimString) { Format = format, Bytes = bytes };
    public static RespValue FromInteger(long v) => new(RespType.Integer) { Integer = v };
    public static RespValue FromDouble(double v) => new(RespType.Double) { Double = v };
    public static RespValue FromBoolean(bool v) => new(RespType.Boolean) { Boolean = v };
    public static RespValue Aggregate(RespType type, RespValue[] items) => new(type) { Items = items };

    /// <summary>The text of a string-like reply; null for Null; integers and doubles formatted invariantly.</summary>
    public string? AsString() => Type switch
    {
        RespType.Null => null,
        RespType.Integer => Integer.ToString(CultureInfo.InvariantCulture),
        RespType.Double => Double.ToString("R", CultureInfo.InvariantCulture),
        RespType.Boolean => Boolean ? "1" : "0",
        RespType.Array or RespType.Map or RespType.Set or RespType.Push =>
            throw new InvalidCastException($"a {Type} reply is not a string"),
        _ => Encoding.UTF8.GetString(Bytes.Span),
    };

    /// <summary>An integer reply, or a string reply that holds an integer (RESP2 sends some numbers as bulk strings).</summary>
    public long AsInt64() => Type switch
    {
        RespType.Integer => Integer,
        RespType.Boolean => Boolean ? 1 : 0,
        RespType.BulkString or RespType.SimpleString =>
            long.TryParse(Bytes.Span, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v)
                ? v : throw new InvalidCastException("reply is not an integer"),
        _ => throw new InvalidCastException($"a {Type} reply is not an integer"),
    };

    /// <summary>A RESP3 double, or a RESP2 bulk string holding one (ZSCORE and friends).</summary>
    public double AsDouble() => Type switch
    {
        RespType.Double => Double,
        RespType.Integer => Integer,
        RespType.BulkString or RespType.SimpleString => RespParser.ParseDouble(Bytes.Span),
        _ => throw new InvalidCastException($"a {Type} reply is not a double"),
    };

    public override string ToString() => Type switch
    {
        RespType.Array or RespType.Set or RespType.Push or RespType.Map =>
            $"{Type}[{string.Join(", ", Items.Select(i => i.ToString()))}]",
        RespType.Null => "(nil)",
        _ => $"{Type}:{AsString()}",
    };
}
