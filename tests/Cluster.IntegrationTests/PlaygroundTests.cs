using System.Text.Json;
using Cluster.Tests;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// The web playground in headless Chromium (Debian's chromium through the pinned playwright-core):
/// a message streams in with TTFT and KV figures, and a reload resumes the same session. The screenshot
/// goes to docs/img/playground.png with LLMCLUSTER_UPDATE_SCREENSHOTS=1 (how the docs' copy was made).
/// </summary>
public class PlaygroundTests(OpenAiFixture f) : IClassFixture<OpenAiFixture>
{
    [SkippableFact]
    public async Task Playground_streams_a_reply_shows_ttft_and_kv_and_resumes_after_a_reload()
    {
        Skip.If(SharedData.Root is null, SharedData.SkipReason);
        NodePeers.Require("playwright-core", command: "chromium");
        string screenshot = Environment.GetEnvironmentVariable("LLMCLUSTER_UPDATE_SCREENSHOTS") == "1"
            ? Path.Combine(ExternalTools.RepoRoot, "docs", "img", "playground.png")
            : Path.Combine(Path.GetTempPath(), $"playground-{Guid.NewGuid():N}.png");
        Directory.CreateDirectory(Path.GetDirectoryName(screenshot)!);
        var url = $"http://127.0.0.1:{f.Cluster.Gateway.HttpEndPoint.Port}/";
        var stdout = await Task.Run(() => NodePeers.Run("playground.js", JsonSerializer.Serialize(new { url, screenshot }), TimeSpan.FromMinutes(3)));
        using var doc = JsonDocument.Parse(stdout);
        var r = doc.RootElement;
        var first = r.GetProperty("first");
        Assert.Equal("", first.GetProperty("error").GetString());
        Console.WriteLine($"distinct reply lengths seen while it streamed: {first.GetProperty("lengths").GetArrayLength()}");
        Assert.True(first.GetProperty("lengths").GetArrayLength() > 2, $"the reply did not stream: {first}");
        Assert.Matches(@"^\d+ ms$", first.GetProperty("ttft").GetString());
        Assert.Matches(@"^\d+(\.\d)?$", first.GetProperty("tps").GetString());
        Assert.Contains("sink_window(4,60)", first.GetProperty("kv").GetString());
        var session = first.GetProperty("session").GetString();
        Assert.Matches("^[0-9a-f]{32}$", session);

        Assert.Equal(session, r.GetProperty("restored").GetProperty("session").GetString());
        Assert.Equal(2, r.GetProperty("restored").GetProperty("messages").GetInt32());
        var second = r.GetProperty("second");
        Assert.Equal("", second.GetProperty("error").GetString());
        Assert.Equal(session, second.GetProperty("session").GetString());
        Assert.Equal(2, second.GetProperty("replies").GetArrayLength());
        Assert.Equal(0, r.GetProperty("errors").GetArrayLength());

        var png = await File.ReadAllBytesAsync(screenshot);
        Assert.True(png.Length > 10_000 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', $"{screenshot} is not a screenshot");
        if (!screenshot.Contains(Path.Combine("docs", "img"))) File.Delete(screenshot);
    }
}
