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
}
