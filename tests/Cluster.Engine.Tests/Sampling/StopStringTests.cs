using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>Stop strings across token boundaries: caught, trimmed, and never partly shown.</summary>
public sealed class StopStringTests
{
    /// <summary>Feeds pieces to a matcher; returns what was streamed after each piece and whether it stopped.</summary>
    private static (List<string> Streamed, bool Stopped) Feed(string[] stops, params string[] pieces)
    {
        var m = new StopStringMatcher(stops);
        var streamed = new List<string>();
        foreach (var piece in pieces)
        {
            streamed.Add(m.Push(piece, canStop: true, out bool stopped));
            if (stopped) return (streamed, true);
        }
        streamed.Add(m.Flush());
        return (streamed, false);
    }

    [Theory]
    [InlineData("Hel|lo ST|OP| more", "Hello ")]      // two pieces
    [InlineData("a S|T|OP|x", "a ")]                  // three pieces
    [InlineData("xyzSTOPabc", "xyz")]                 // one piece, text after it dropped
    [InlineData("S|TO|S|TOP", "STO")]                 // a false start, then the real one
    [InlineData("ST|ST|OP", "ST")]
    public void Split_stop_string_is_caught_and_trimmed(string pieces, string expected)
    {
        var (streamed, stopped) = Feed(["STOP"], pieces.Split('|'));
        Assert.True(stopped);
        Assert.Equal(expected, string.Concat(streamed));
    }

    [Fact]
    public void Held_text_is_released_when_the_stop_string_does_not_complete()
    {
        var (streamed, stopped) = Feed(["STOP"], "a S", "T", "x");
        Assert.False(stopped);
        Assert.Equal(["a ", "", "STx", ""], streamed);
        (streamed, _) = Feed(["STOP"], "ok ST");
        Assert.Equal(["ok ", "ST"], streamed); // the end of the output releases what was held
    }

    [Fact]
    public void The_earliest_of_several_stop_strings_wins()
    {
        Assert.Equal("x", string.Concat(Feed(["cd", "abc"], "xa", "bc").Streamed));
        Assert.Equal("xab", string.Concat(Feed(["cd", "abcz"], "xab", "cd").Streamed));
    }

    [Fact]
    public void Before_min_tokens_a_completed_stop_string_passes_as_text()
    {
        var m = new StopStringMatcher(["STOP"]);
        Assert.Equal("a", m.Push("aST", canStop: false, out _));
        Assert.Equal("STOP", m.Push("OP", canStop: false, out bool stopped));
        Assert.False(stopped);
        Assert.Equal("", m.Push("ST", canStop: true, out _));
        Assert.Equal("", m.Push("OP", canStop: true, out stopped));
        Assert.True(stopped);
    }

    /// <summary>stories260K's greedy story, with stop strings cut across 2 and 3 of its tokens.</summary>
    [SharedDataTheory]
    [InlineData(2)]
    [InlineData(3)]
    public void Generator_catches_a_stop_string_spanning_tokens_and_streams_no_part_of_it(int span)
    {
        using var model = TestModels.Load(TestModels.Stories260K);
        var tok = TestModels.Stories260KTokenizer();
        var generator = new TextGenerator(model, tok);
        var greedy = new SamplingParameters { Temperature = 0, MaxTokens = 40 };
        var ids = GenerationOutput.Collect(generator.Generate([tok.BosId], greedy))[0].Ids;
        var pieces = ids.Select((id, i) => tok.Decode([tok.BosId, .. ids.Take(i + 1)]).Length).ToList(); // text end after each token
        var text = tok.Decode([tok.BosId, .. ids]);

        // A stop string from the middle of token k to the middle of token k+span-1, tokens at least 2 chars long.
        int k = Enumerable.Range(5, ids.Count - 10).First(i =>
            pieces[i] - pieces[i - 1] >= 2 && pieces[i + span - 1] - pieces[i + span - 2] >= 2);
        int from = pieces[k - 1] + 1, to = pieces[k + span - 2] + 1;
        var stop = text[from..to];
        var expected = text[..text.IndexOf(stop, StringComparison.Ordinal)];

        var chunks = generator.Generate([tok.BosId], greedy with { Stop = [stop] }).ToList();
        var streamed = "";
        foreach (var c in chunks)
        {
            streamed += c.Text;
            Assert.True(expected.StartsWith(streamed, StringComparison.Ordinal), $"streamed '{streamed}' is not a prefix of '{expected}' (stop '{stop}')");
        }
        Assert.Equal(expected, streamed);
        Assert.Equal(FinishReason.Stop, chunks[^1].Finish);
        Assert.Equal(ids.Take(chunks.Count), chunks.Select(c => c.TokenId!.Value)); // the tokens up to the stop are reported
    }
}
