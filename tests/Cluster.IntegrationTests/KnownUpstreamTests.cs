using LlmCtl.Fuzz;
using Xunit;
using static LlmCtl.Fuzz.Http2Frames;

namespace Cluster.IntegrationTests;

/// <summary>
/// How the fuzz recognizes Kestrel's HPACK index-0 bug from its input (KnownUpstream): only a header
/// block that really reaches an indexed field with index 0 is excused; any other GOAWAY INTERNAL_ERROR
/// stays a finding.
/// </summary>
public sealed class KnownUpstreamTests
{
    [Theory]
    [InlineData(new byte[] { 0x80 }, true)]                                  // index 0 first
    [InlineData(new byte[] { 0x82, 0x86, 0x80 }, true)]                      // after valid indexed fields
    [InlineData(new byte[] { 0x00, 0x01, (byte)'a', 0x01, (byte)'b', 0x80 }, true)] // after a literal with a new name
    [InlineData(new byte[] { 0x82, 0x86, 0x84 }, false)]                     // :method GET, :scheme http, :path /
    [InlineData(new byte[] { 0xFF, 0x80, 0x80, 0x80, 0x80, 0x80 }, false)]   // an integer that never ends
    [InlineData(new byte[] { 0x00, 0x7F }, false)]                           // a name longer than the block
    [InlineData(new byte[] { 0x3F, 0xE1, 0x1F, 0x80 }, true)]                // a table size update, then index 0
    public void An_hpack_block_reaches_index_zero_only_when_it_does(byte[] block, bool expected) =>
        Assert.Equal(expected, KnownUpstream.BlockHasIndexZero(block));

    [Fact]
    public void Headers_frames_are_found_by_walking_the_connection_with_padding_and_priority()
    {
        byte[] settings = SettingsFrame();
        byte[] padded = [2, 0x80, 0, 0]; // pad length 2, the block (0x80), two pad bytes
        Assert.True(KnownUpstream.SendsHpackIndexZero([.. Preface, .. settings, .. Frame(Headers, EndHeaders | Padded, 1, padded)]));
        byte[] prioritized = [0, 0, 0, 0, 16, 0x80];
        Assert.True(KnownUpstream.SendsHpackIndexZero([.. Preface, .. settings, .. Frame(Headers, EndHeaders | PriorityFlag, 1, prioritized)]));
        // The same byte in a DATA frame, or a HEADERS frame declared longer than what was sent, is not it.
        Assert.False(KnownUpstream.SendsHpackIndexZero([.. Preface, .. settings, .. Frame(Data, 0, 1, [0x80])]));
        Assert.False(KnownUpstream.SendsHpackIndexZero([.. Preface, .. settings, .. Header(100, Headers, EndHeaders, 1), 0x80]));
        Assert.False(KnownUpstream.SendsHpackIndexZero([.. Frame(Headers, EndHeaders, 1, [0x80])])); // no preface
    }

    [Fact]
    public void Padding_that_leaves_no_room_for_the_priority_fields_is_recognized_and_nothing_else()
    {
        byte[] Conn(byte flags, byte[] payload) => [.. Preface, .. SettingsFrame(), .. Frame(Headers, flags, 1, payload)];
        // Request 29,106 of seed 1: 24 bytes, pad length 22, PADDED | PRIORITY: 1 + 5 + 22 > 24.
        byte[] found = [0x16, 0x4c, 0x72, 0x75, 0x8a, 0xdf, 0x3a, 0x80, 0xf8, 0x6b, 0x93, 0x14, 0xe6, 0x01, 0x52, 0x5a, 0x46, 0x58, 0xdc, 0xa9, 0xac, 0x28, 0xde, 0x9e];
        Assert.True(KnownUpstream.SendsPaddingOverPriority(Conn(EndHeaders | Padded | PriorityFlag, found)));
        Assert.Equal(KnownUpstream.PaddingOverPriorityNote, KnownUpstream.ExplainInternalError(Conn(EndHeaders | Padded | PriorityFlag, found)));
        // Padding that fits beside the priority fields, padding only, or a pad length over the payload (Kestrel: PROTOCOL_ERROR) are not it.
        byte[] fits = [.. found[..6], .. new byte[18]];
        fits[0] = 18;
        Assert.False(KnownUpstream.SendsPaddingOverPriority(Conn(EndHeaders | Padded | PriorityFlag, fits)));
        Assert.False(KnownUpstream.SendsPaddingOverPriority(Conn(EndHeaders | Padded, found)));
        byte[] over = [.. found];
        over[0] = 24;
        Assert.False(KnownUpstream.SendsPaddingOverPriority(Conn(EndHeaders | Padded | PriorityFlag, over)));
        Assert.Null(KnownUpstream.ExplainInternalError(Conn(EndHeaders, [0x82, 0x86, 0x84])));
    }
}
