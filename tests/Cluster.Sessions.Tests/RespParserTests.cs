using System.Text;
using Xunit;

namespace Cluster.Redis.Tests;

/// <summary>Table tests of the RESP2/RESP3 parser (valid, incomplete, malformed), plus a fuzz-style test.</summary>
public class RespParserTests
{
    private static readonly RespLimits Limits = new(MaxBulkBytes: 1024, MaxElements: 100, MaxDepth: 8);

    // input (with \r\n written out), expected ToString(), reason
    public static TheoryData<string, string, string> Valid => new()
    {
        { "+OK\r\n", "SimpleString:OK", "simple string" },
        { "+\r\n", "SimpleString:", "empty simple string" },
        { "-ERR unknown command\r\n", "Error:ERR unknown command", "simple error" },
        { ":0\r\n", "Integer:0", "zero" },
        { ":-9223372036854775808\r\n", "Integer:-9223372036854775808", "int64 min" },
        { ":+42\r\n", "Integer:42", "explicit plus sign (spec allows it)" },
        { "$5\r\nhello\r\n", "BulkString:hello", "bulk string" },
        { "$0\r\n\r\n", "BulkString:", "empty bulk string" },
        { "$4\r\na\r\nb\r\n", "BulkString:a\r\nb", "bulk strings are binary-safe" },
        { "$-1\r\n", "(nil)", "RESP2 null bulk" },
        { "*-1\r\n", "(nil)", "RESP2 null array" },
        { "*0\r\n", "Array[]", "empty array" },
        { "*2\r\n$1\r\na\r\n:1\r\n", "Array[BulkString:a, Integer:1]", "mixed array" },
        { "*1\r\n*1\r\n+x\r\n", "Array[Array[SimpleString:x]]", "nested array" },
        { "_\r\n", "(nil)", "RESP3 null" },
        { "#t\r\n", "Boolean:1", "RESP3 true" },
        { "#f\r\n", "Boolean:0", "RESP3 false" },
        { ",1.5\r\n", "Double:1.5", "RESP3 double" },
        { ",-2e3\r\n", "Double:-2000", "double with exponent" },
        { ",inf\r\n", "Double:Infinity", "infinity" },
        { "(3492890328409238509324850943850943825024385\r\n", "BigNumber:3492890328409238509324850943850943825024385", "big number" },
        { "!21\r\nSYNTAX invalid syntax\r\n", "Error:SYNTAX invalid syntax", "blob error" },
        { "=15\r\ntxt:Some string\r\n", "VerbatimString:Some string", "verbatim string" },
        { "%1\r\n+k\r\n:1\r\n", "Map[SimpleString:k, Integer:1]", "map flattened" },
        { "~2\r\n+a\r\n+b\r\n", "Set[SimpleString:a, SimpleString:b]", "set" },
        { ">2\r\n+message\r\n+x\r\n", "Push[SimpleString:message, SimpleString:x]", "push" },
        { "|1\r\n+ttl\r\n:3\r\n:7\r\n", "Integer:7", "attribute attaches to the following reply" },
    };

    [Theory, MemberData(nameof(Valid))]
    public void Parses_valid_replies(string input, string expected, string reason)
    {
        var bytes = Encoding.UTF8.GetBytes(input + "+next\r\n");
        Assert.True(RespParser.TryParse(bytes, Limits, out var v, out int used), reason);
        Assert.Equal(expected, v!.ToString());
        Assert.Equal(Encoding.UTF8.GetByteCount(input), used);
    }

    [Fact]
    public void Attribute_is_kept_on_the_reply()
    {
        Assert.True(RespParser.TryParse("|1\r\n+ttl\r\n:3\r\n:7\r\n"u8, Limits, out var v, out _));
        Assert.Equal("Map[SimpleString:ttl, Integer:3]", v!.Attributes!.ToString());
        Assert.True(RespParser.TryParse("=15\r\ntxt:Some string\r\n"u8, Limits, out var verbatim, out _));
        Assert.Equal("txt", verbatim!.Format);
    }

    [Theory, MemberData(nameof(Valid))]
    public void Every_strict_prefix_of_a_valid_reply_needs_more(string input, string expected, string reason)
    {
        _ = expected;
        var bytes = Encoding.UTF8.GetBytes(input);
        for (int n = 0; n < bytes.Length; n++)
            Assert.False(RespParser.TryParse(bytes.AsSpan(0, n), Limits, out _, out _), $"{reason}: prefix of {n} bytes");
    }

    public static TheoryData<string, string> Malformed => new()
    {
        { "?x\r\n", "unknown type byte" },
        { ":12a\r\n", "integer with a letter" },
        { ":\r\n", "empty integer" },
        { ":-\r\n", "sign without digits" },
        { ":9223372036854775808\r\n", "integer overflow" },
        { "$-2\r\n", "negative bulk length other than -1" },
        { "$2000\r\n", "bulk longer than the limit" },
        { "$3\r\nabcd\r\n", "bulk payload longer than declared" },
        { "$3\r\nabcX\n", "bulk not followed by CRLF" },
        { "$3\r\nabcX", "bad bulk terminator seen before the reply is complete" },
        { "*101\r\n", "array longer than the limit" },
        { "%-1\r\n", "null map does not exist" },
        { "+OK\n", "LF without CR" },
        { "+O\rK\r\n", "CR inside a line" },
        { "#x\r\n", "boolean other than t/f" },
        { "_x\r\n", "null with payload" },
        { ",abc\r\n", "malformed double" },
        { ",1.5x\r\n", "double with trailing garbage" },
        { "(12a\r\n", "big number with a letter" },
        { "=3\r\ntxt\r\n", "verbatim shorter than its format prefix" },
        { "=5\r\ntxt-a\r\n", "verbatim without the colon" },
        { "$?\r\n", "streamed strings are not supported" },
        { "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n+deep\r\n", "nesting deeper than the limit" },
    };

    [Theory, MemberData(nameof(Malformed))]
    public void Rejects_malformed_input(string input, string reason)
    {
        var bytes = Encoding.UTF8.GetBytes(input);
        Assert.True(Throws(bytes), reason);
    }

    private static bool Throws(byte[] bytes)
    {
        try { RespParser.TryParse(bytes, Limits, out _, out _); return false; }
        catch (RedisProtocolException) { return true; }
    }

    [Fact]
    public void Line_without_end_longer_than_the_line_limit_is_malformed()
    {
        var bytes = new byte[RespParser.MaxLineBytes + 10];
        bytes.AsSpan().Fill((byte)'a');
        bytes[0] = (byte)'+';
        Assert.Throws<RedisProtocolException>(() => RespParser.TryParse(bytes, Limits, out _, out _));
    }

    [Fact]
    public void Random_bytes_parse_need_more_or_throw_protocol_errors_only()
    {
        // Fuzz-style: mutate valid replies and generate random ones; any other exception, or a
        // consumed count outside the buffer, is a bug. Seeded for reproducibility.
        var rng = new Random(1234);
        var seeds = Valid.Select(row => Encoding.UTF8.GetBytes((string)row[0])).ToArray();
        var alphabet = "+-:$*_#,(!=%~>|0123456789-\r\nabtf?."u8.ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int parsed = 0, needMore = 0, rejected = 0;
        for (int iter = 0; iter < 200_000 && sw.Elapsed < TimeSpan.FromSeconds(20); iter++)
        {
            byte[] input;
            if (iter % 2 == 0)
            {
                input = (byte[])seeds[rng.Next(seeds.Length)].Clone();
                int flips = rng.Next(1, 4);
                for (int f = 0; f < flips && input.Length > 0; f++)
                    input[rng.Next(input.Length)] = rng.Next(3) == 0 ? (byte)rng.Next(256) : alphabet[rng.Next(alphabet.Length)];
            }
            else
            {
                input = new byte[rng.Next(0, 40)];
                for (int i = 0; i < input.Length; i++) input[i] = alphabet[rng.Next(alphabet.Length)];
            }
            try
            {
                if (RespParser.TryParse(input, Limits, out var v, out int used))
                {
                    Assert.NotNull(v);
                    Assert.InRange(used, 1, input.Length);
                    parsed++;
                }
                else needMore++;
            }
            catch (RedisProtocolException) { rejected++; }
        }
        Assert.True(parsed > 0 && needMore > 0 && rejected > 0, $"parsed {parsed}, need more {needMore}, rejected {rejected}");
    }

    [Fact]
    public void Command_writer_encodes_an_array_of_bulk_strings_of_the_computed_length()
    {
        RedisArg[] args = ["SET", "kéy", new byte[] { 0, 13, 10 }, -15L];
        int len = RespCommandWriter.GetEncodedLength(args);
        var buf = new byte[len];
        Assert.Equal(len, RespCommandWriter.Write(args, buf));
        var expected = "*4\r\n$3\r\nSET\r\n$4\r\nkéy\r\n$3\r\n\0\r\n\r\n$3\r\n-15\r\n"u8.ToArray();
        Assert.Equal(expected, buf);
        Assert.Throws<ArgumentException>(() => RespCommandWriter.GetEncodedLength([]));
    }

    public static TheoryData<string, string, int, string?, string?, int> OptionRows => new()
    {
        { "localhost:6380", "localhost", 6380, null, null, 0 },
        { "10.0.0.1", "10.0.0.1", 6379, null, null, 0 },
        { "redis://:secret@h:7000/2", "h", 7000, null, "secret", 2 },
        { "redis://alice:pw@h", "h", 6379, "alice", "pw", 0 },
    };

    [Theory, MemberData(nameof(OptionRows))]
    public void Options_parse_endpoints(string text, string host, int port, string? user, string? password, int db)
    {
        var o = RedisOptions.Parse(text);
        Assert.Equal((host, port, user, password, db), (o.Host, o.Port, o.User, o.Password, o.Database));
    }

    [Theory]
    [InlineData("host:notaport")]
    [InlineData("host:70000")]
    [InlineData("redis://h/notadb")]
    public void Options_reject_bad_endpoints(string text) => Assert.Throws<FormatException>(() => RedisOptions.Parse(text));
}
