using System.Buffers.Binary;

namespace LlmCtl.Fuzz;

/// <summary>
/// Answers the fuzz gets because of a known bug outside this repository, recognized from the input
/// that got them so that they are reported (as such, with their count) rather than failing the run,
/// while any other answer of the same kind stays a finding.
/// </summary>
public static class KnownUpstream
{
    /// <summary>What the report says about such an answer; it also marks the example as known.</summary>
    public const string Prefix = "known upstream: ";

    /// <summary>
    /// Kestrel (ASP.NET Core 10) ends a connection with GOAWAY INTERNAL_ERROR, not COMPRESSION_ERROR, when a
    /// header block holds an HPACK indexed field with index 0 (RFC 7541 6.1 makes index 0 a decoding
    /// error): the shared HPackDecoder passes 0 to the static table and Http2Connection.OnStaticIndexedHeader
    /// throws IndexOutOfRangeException. Only that connection is closed; the server goes on (bench/RESULTS.md).
    /// </summary>
    public const string HpackIndexZeroNote = Prefix + "Kestrel answers an HPACK indexed field with index 0 with GOAWAY INTERNAL_ERROR instead of COMPRESSION_ERROR (that connection only)";

    /// <summary>
    /// Kestrel (ASP.NET Core 10) ends a connection with GOAWAY INTERNAL_ERROR, not PROTOCOL_ERROR, for a
    /// HEADERS frame with both PADDED and PRIORITY whose pad length is under the payload length but leaves
    /// no room for the 5 priority bytes: Http2Connection.ProcessHeadersFrameAsync slices the payload with a
    /// negative length (ArgumentOutOfRangeException, "Connection processing ended abnormally"). Found by the
    /// 100,000-request run of 2026-12-04 (request 29,106 of seed 1); only that connection is closed.
    /// </summary>
    public const string PaddingOverPriorityNote = Prefix + "Kestrel answers a PADDED+PRIORITY HEADERS frame whose padding leaves no room for the priority fields with GOAWAY INTERNAL_ERROR instead of PROTOCOL_ERROR (that connection only)";

    /// <summary>The note for a GOAWAY INTERNAL_ERROR on a raw HTTP/2 connection that sent <paramref name="input"/>
    /// if a known upstream bug explains it, else null (a finding).</summary>
    public static string? ExplainInternalError(ReadOnlySpan<byte> input) =>
        SendsHpackIndexZero(input) ? HpackIndexZeroNote : SendsPaddingOverPriority(input) ? PaddingOverPriorityNote : null;

    /// <summary>Whether the connection sends a HEADERS frame with PADDED and PRIORITY whose pad length is
    /// below its payload length while pad length byte + priority fields + padding exceed it.</summary>
    public static bool SendsPaddingOverPriority(ReadOnlySpan<byte> input)
    {
        foreach (var (flags, payload) in HeadersFrames(input))
            if ((flags & Http2Frames.Padded) != 0 && (flags & Http2Frames.PriorityFlag) != 0 && payload.Length >= 1
                && payload[0] < payload.Length && 1 + 5 + payload[0] > payload.Length)
                return true;
        return false;
    }

    /// <summary>
    /// Whether a raw HTTP/2 connection's bytes (preface first) send a HEADERS frame whose header block
    /// reaches an indexed field with index 0 before it ends or stops parsing; the HEADERS frames are
    /// found by walking the frames as declared (a frame declared longer than what was sent ends the walk).
    /// </summary>
    public static bool SendsHpackIndexZero(ReadOnlySpan<byte> input)
    {
        foreach (var (flags, payload) in HeadersFrames(input))
        {
            int skip = 0, pad = 0;
            if ((flags & Http2Frames.Padded) != 0)
            {
                if (payload.Length < 1) continue;
                pad = payload[0];
                skip = 1;
            }
            if ((flags & Http2Frames.PriorityFlag) != 0) skip += 5;
            if (skip + pad > payload.Length) continue;
            if (BlockHasIndexZero(payload.AsSpan(skip, payload.Length - skip - pad))) return true;
        }
        return false;
    }

    /// <summary>The HEADERS frames (flags, payload) of a raw connection's bytes, preface first, walking the
    /// frames as declared; a frame declared longer than what was sent ends the walk.</summary>
    private static List<(byte Flags, byte[] Payload)> HeadersFrames(ReadOnlySpan<byte> input)
    {
        var frames = new List<(byte, byte[])>();
        int at = Http2Frames.Preface.Length;
        if (input.Length < at || !input[..at].SequenceEqual(Http2Frames.Preface)) return frames;
        while (at + 9 <= input.Length)
        {
            int length = input[at] << 16 | input[at + 1] << 8 | input[at + 2];
            byte type = input[at + 3], flags = input[at + 4];
            at += 9;
            if (at + length > input.Length) break;
            if (type == Http2Frames.Headers) frames.Add((flags, input.Slice(at, length).ToArray()));
            at += length;
        }
        return frames;
    }

    /// <summary>Walks an HPACK block's representations (RFC 7541 6) until an indexed field with index 0
    /// (true) or the end or anything unparsable (false).</summary>
    public static bool BlockHasIndexZero(ReadOnlySpan<byte> block)
    {
        int at = 0;
        while (at < block.Length)
        {
            byte b = block[at];
            if ((b & 0x80) != 0) // 6.1 indexed field
            {
                if (!Integer(block, ref at, 7, out long index)) return false;
                if (index == 0) return true;
            }
            else if ((b & 0xE0) == 0x20) // 6.3 dynamic table size update
            {
                if (!Integer(block, ref at, 5, out _)) return false;
            }
            else // 6.2 literals: with incremental indexing (6-bit index), without or never indexed (4-bit)
            {
                if (!Integer(block, ref at, (b & 0x40) != 0 ? 6 : 4, out long nameIndex)) return false;
                if (nameIndex == 0 && !String(block, ref at)) return false;
                if (!String(block, ref at)) return false;
            }
        }
        return false;
    }

    /// <summary>RFC 7541 5.1: an integer with an N-bit prefix.</summary>
    private static bool Integer(ReadOnlySpan<byte> s, ref int at, int prefixBits, out long value)
    {
        int max = (1 << prefixBits) - 1;
        value = s[at++] & max;
        if (value < max) return true;
        for (int shift = 0; ; shift += 7)
        {
            if (at >= s.Length || shift > 28) return false;
            byte b = s[at++];
            value += (long)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return true;
        }
    }

    /// <summary>RFC 7541 5.2: a string literal (Huffman or not; only its length matters here).</summary>
    private static bool String(ReadOnlySpan<byte> s, ref int at)
    {
        if (at >= s.Length || !Integer(s, ref at, 7, out long length) || length > s.Length - at) return false;
        at += (int)length;
        return true;
    }
}
