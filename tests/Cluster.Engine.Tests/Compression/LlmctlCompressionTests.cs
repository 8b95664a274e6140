using System.Text.Json;
using Cluster.Engine.Compression.Calibration;
using Cluster.Engine.Tests.Model;
using Cluster.Tests;
using Xunit;

namespace Cluster.Engine.Tests.Compression;

/// <summary>`llmctl calibrate` and `llmctl perplexity --policy` as a user runs them, on stories260K.</summary>
public sealed class LlmctlCompressionTests
{
    private static string Text => SharedData.Path_("corpus", "tinystories_valid_head.txt");

    [SharedDataFact]
    public void Calibrate_writes_filters_that_load_back_and_drive_qfilters_in_perplexity()
    {
        using var dir = new TempDir();
        var filters = dir.File("filters.safetensors");
        var (code, stdout, stderr) = Llmctl.Run("calibrate", "--model", TestModels.Stories260K, "--text", Text, "--out", filters,
            "--sequences", "2", "--seq-len", "256", "--samples", "300", "--offset-tokens", "5000", "--threads", "1");
        Assert.True(code == 0, stderr);
        Assert.Contains("q_filters [5, 4, 8]", stdout);
        Assert.Contains("2/2 sequences", stderr);                     // progress
        var loaded = QFilters.Load(filters, 5, 4, 8);
        Assert.All(loaded.Data, v => Assert.True(float.IsFinite(v)));

        var svg = dir.File("plot.svg");
        (code, stdout, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K, "--text", Text, "--tokens", "600",
            "--policy", "dense", "--policy", "sink_window(4,60)", "--policy", "qfilters(64,16)", "--policy", "knorm(64,16)", "--policy", "window(64)",
            "--filters", filters, "--extrapolate", "--svg", svg, "--json", "--threads", "1");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var policies = doc.RootElement.GetProperty("policies").EnumerateArray().ToList();
        Assert.Equal(["dense", "sink_window(4,60)", "qfilters(64,16)", "knorm(64,16)", "window(64)"], policies.Select(p => p.GetProperty("policy").GetString()));
        foreach (var p in policies)
        {
            var buckets = p.GetProperty("buckets").EnumerateArray().ToList();
            Assert.Equal([0, 256, 512], buckets.Select(b => b.GetProperty("start").GetInt32()));
            Assert.Equal(599, buckets.Sum(b => b.GetProperty("tokens").GetInt32()));
            Assert.InRange(p.GetProperty("perplexity").GetDouble(), 1.5, 50);
        }
        var plot = File.ReadAllText(svg);
        Assert.StartsWith("<svg", plot);
        Assert.Equal(5, plot.Split("<polyline").Length - 1);
    }

    [SharedDataFact]
    public void Perplexity_kv_dtype_compares_precisions_and_fp32_is_the_plain_stream()
    {
        var (code, stdout, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K, "--text", Text, "--tokens", "200",
            "--kv-dtype", "fp32", "bf16", "fp16", "--threads", "1", "--json");
        Assert.True(code == 0, stderr);
        var rows = JsonDocument.Parse(stdout).RootElement.GetProperty("policies").EnumerateArray()
            .ToDictionary(p => p.GetProperty("policy").GetString()!, p => p.GetProperty("perplexity").GetDouble());
        Assert.Equal(["dense", "dense kv=bf16", "dense kv=fp16"], rows.Keys);
        (code, stdout, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K, "--text", Text, "--tokens", "200", "--policy", "dense", "--threads", "1", "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal(JsonDocument.Parse(stdout).RootElement.GetProperty("policies")[0].GetProperty("perplexity").GetDouble(), rows["dense"]);
        // Rounded KV moves the loss, but only a little (a run that ignored --kv-dtype would be equal; a broken conversion far off).
        foreach (var d in new[] { "dense kv=bf16", "dense kv=fp16" })
        {
            Assert.NotEqual(rows["dense"], rows[d]);
            Assert.InRange(rows[d] / rows["dense"], 0.99, 1.01);
        }
    }

    [SharedDataFact]
    public void Dense_past_the_context_is_refused_with_a_clear_message()
    {
        var (code, _, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K, "--text", Text, "--tokens", "600", "--policy", "dense");
        Assert.Equal(2, code);
        Assert.Contains("past the model's context of 512", stderr);
        Assert.Contains("--extrapolate", stderr);
        (code, _, stderr) = Llmctl.Run("perplexity", "--model", TestModels.Stories260K, "--text", Text, "--tokens", "600", "--policy", "qfilters(64,16)");
        Assert.Equal(2, code);
        Assert.Contains("--qfilters FILE", stderr);
    }

    [SharedDataFact]
    public void Bench_streaming_reports_every_size_and_a_flat_cache_over_the_stream()
    {
        var (code, stdout, stderr) = Llmctl.Run("bench", "streaming", "--model", TestModels.Stories260K, "--sizes", "16,32",
            "--steps", "2", "--stream-tokens", "600", "--threads", "1", "--json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var sizes = doc.RootElement.GetProperty("sizes").EnumerateArray().ToList();
        Assert.Equal([16, 32], sizes.Select(x => x.GetProperty("cache").GetInt32()));
        Assert.All(sizes, x => Assert.True(x.GetProperty("speedup").GetDouble() > 0));
        var stream = doc.RootElement.GetProperty("stream").EnumerateArray().ToList();
        Assert.Equal(600, stream[^1].GetProperty("tokens").GetInt32());
        // The cache grows by doubling up to the budget of 4 + 252 slots and never past it.
        Assert.All(stream.Where(p => p.GetProperty("tokens").GetInt32() >= 256), p => Assert.Equal(256, p.GetProperty("capacity").GetInt32()));
    }
}
