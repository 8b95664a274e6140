using System.Text.Json;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Sampling;

/// <summary>`llmctl generate` with the sampling options, run as a process.</summary>
public sealed class LlmctlGenerateTests
{
    [SharedDataFact]
    public void Seeded_nucleus_sampling_on_stories260K_is_stable_across_runs()
    {
        string[] args = ["generate", "--model", TestModels.Stories260K, "--temperature", "0.8", "--top-p", "0.9", "--seed", "1", "--max-tokens", "64"];
        var first = Llmctl.Run(args);
        Assert.True(first.ExitCode == 0, first.Stderr);
        var second = Llmctl.Run(args);
        Assert.Equal(first.Stdout, second.Stdout);
        Assert.StartsWith("Once upon a time", first.Stdout);
        Assert.Contains("seed 1", first.Stderr);
        var other = Llmctl.Run([.. args[..^4], "2", "--max-tokens", "64"]);
        Assert.NotEqual(first.Stdout, other.Stdout);
    }

    [SharedDataFact]
    public void Json_reports_finish_reasons_logprobs_and_every_output()
    {
        var (code, stdout, stderr) = Llmctl.Run("generate", "--model", TestModels.Stories260K, "--temperature", "1", "--seed", "3",
            "--n", "2", "--max-tokens", "30", "--logprobs", "2", "--stop", "Lily", "--json");
        Assert.True(code == 0, stderr);
        var root = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(3, root.GetProperty("seed").GetInt64());
        var choices = root.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal(2, choices.Count);
        foreach (var c in choices)
        {
            var reason = c.GetProperty("finish_reason").GetString();
            Assert.Contains(reason, new[] { "stop", "length", "eos" });
            Assert.DoesNotContain("Lily", c.GetProperty("text").GetString());
            var logprobs = c.GetProperty("logprobs").EnumerateArray().ToList();
            Assert.Equal(c.GetProperty("ids").GetArrayLength(), logprobs.Count);
            Assert.All(logprobs, l => Assert.Equal(2, l.GetProperty("top_logprobs").GetArrayLength()));
            Assert.All(logprobs, l => Assert.True(l.GetProperty("logprob").GetDouble() <= 0));
        }
    }

    [SharedDataFact]
    public void Beam_search_prints_each_output_with_its_score()
    {
        var (code, stdout, stderr) = Llmctl.Run("generate", "--model", TestModels.Stories260K, "--num-beams", "3", "--n", "2",
            "--max-tokens", "20", "--length-penalty", "1.0", "--early-stopping");
        Assert.True(code == 0, stderr);
        Assert.Contains("--- output 0 (", stdout);
        Assert.Contains("--- output 1 (", stdout);
        Assert.Contains("score -", stdout);
    }

    [Theory]
    [InlineData("--temperature", "-1", "--temperature")]
    [InlineData("--top-k", "-2", "--top-k")]
    [InlineData("--top-p", "0", "--top-p")]
    [InlineData("--min-p", "2", "--min-p")]
    [InlineData("--presence-penalty", "3", "--presence-penalty")]
    [InlineData("--frequency-penalty", "-3", "--frequency-penalty")]
    [InlineData("--repetition-penalty", "0", "--repetition-penalty")]
    [InlineData("--logit-bias", "5", "--logit-bias")]
    [InlineData("--logit-bias", "9999=1", "--logit-bias")]
    [InlineData("--min-tokens", "-1", "--min-tokens")]
    [InlineData("--stop-token-id", "9999", "--stop-token-id")]
    [InlineData("--logprobs", "50", "--logprobs")]
    [InlineData("--n", "0", "--n")]
    [InlineData("--num-beams", "0", "--num-beams")]
    [InlineData("--length-penalty", "NaN", "--length-penalty")]
    [InlineData("--max-tokens", "0", "--max-tokens")]
    public void Bad_options_fail_with_one_line_naming_the_option(string option, string value, string named)
    {
        string[] args = option == "--max-tokens" ? ["generate", option, value] : ["generate", option, value, "--max-tokens", "4"];
        var (code, _, stderr) = Llmctl.Run(args);
        Assert.Equal(2, code);
        Assert.StartsWith($"error: {named} ", stderr.Split('\n').First(l => l.StartsWith("error:")));
    }
}
