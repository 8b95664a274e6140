using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Cluster.Engine.Generation;
using Cluster.Engine.Sampling;
using Cluster.Engine.Tests.Sampling;
using Cluster.Serving.Mapping;
using Cluster.Tests;
using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>
/// n, best_of and beam search through the cluster (gRPC and the OpenAI API) against independent local
/// runs of the engine: each output index equals the local TextGenerator's output of that index, best_of
/// returns the n best of the local outputs by cumulative logprob, and a beam search equals the local
/// BeamSearch and the brute-force enumeration of the engine's beam tests.
/// </summary>
public sealed class MultiOutputTests(ClusterFixture f) : IClassFixture<ClusterFixture>
{
    private const string Prompt = "Once upon a time, there was a little girl named Lily. She";

    private int[] PromptIds => f.Tokenizer.Encode(Prompt, addBos: true);

    private IReadOnlyList<GenerationOutput> Local(SamplingParameters p, int[]? prompt = null) =>
        GenerationOutput.Collect(new TextGenerator(f.Local, f.Tokenizer).Generate(prompt ?? PromptIds, p));

    [SharedDataFact]
    public async Task N_three_seeded_samples_equal_the_local_outputs_of_each_index()
    {
        var p = new SamplingParameters { Temperature = 0.9f, Seed = 4242, MaxTokens = 40, N = 3 };
        var expected = Local(p);
        Assert.True(expected.Select(o => string.Join(',', o.Ids)).Distinct().Count() > 1, "the local outputs should differ by index");

        var got = await GenerateAsync(new GenerateRequest { TokenIds = new TokenIds { Ids = { PromptIds } }, Sampling = SamplingWire.FromEngine(p) });
        Assert.Equal(3, got.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(expected[i].Ids, got[i].Ids);
            Assert.Equal(expected[i].Text, got[i].Text);
            Assert.Equal(SamplingMapping.ToWire(expected[i].Finish), got[i].Finish);
            Assert.Equal(expected[i].Ids.Count, got[i].Complete!.Usage.CompletionTokens);
        }
    }

    [SharedDataFact]
    public async Task Best_of_returns_the_n_local_outputs_with_the_highest_cumulative_logprob()
    {
        var p = new SamplingParameters { Temperature = 1.0f, Seed = 99, MaxTokens = 20, N = 2, BestOf = 5 };
        // Independent local runs of all five indices, ranked here by the sum of their logprobs.
        var all = Local(p with { N = 5, BestOf = null, Logprobs = 0 });
        var expected = all.OrderByDescending(o => o.Logprobs!.Sum(l => (double)l.Logprob)).ThenBy(o => o.Index).Take(2).ToList();
        Assert.NotEqual([0, 1], expected.Select(o => o.Index)); // else the test could not tell ranking from the first n

        var got = await GenerateAsync(new GenerateRequest { TokenIds = new TokenIds { Ids = { PromptIds } }, Sampling = SamplingWire.FromEngine(p) });
        Assert.Equal(2, got.Count);
        for (int r = 0; r < 2; r++)
        {
            Assert.Equal(expected[r].Ids, got[r].Ids);
            Assert.Equal(expected[r].Text, got[r].Text);
            Assert.Equal(SamplingMapping.ToWire(expected[r].Finish), got[r].Finish);
            Assert.Empty(got[r].Logprobs); // not asked for: the ranking's logprobs stay inside
        }
    }

    [SharedDataFact]
    public async Task Beam_search_equals_the_local_search_and_the_brute_force_enumeration()
    {
        // Two tokens: every continuation (512 + 512^2) can be enumerated from 513 forward passes. Four beams
        // are not exhaustive in general; on this prompt the best four continuations all start with one of
        // the four best first tokens, so the search must find exactly them (the local search does).
        var prompt = f.Tokenizer.Encode("Once upon a time", addBos: true);
        var p = new SamplingParameters { NumBeams = 4, N = 4, MaxTokens = 2, Logprobs = 0 };
        var local = Local(p, prompt);
        var enumerated = BeamEnumeration.Enumerate(f.Local, prompt, 2, p.LengthPenalty, f.Local.Config.EosIds);

        var got = await GenerateAsync(new GenerateRequest { TokenIds = new TokenIds { Ids = { prompt } }, Sampling = SamplingWire.FromEngine(p) });
        Assert.Equal(4, got.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(local[i].Ids, got[i].Ids);
            Assert.Equal(local[i].Text, got[i].Text);
            Assert.Equal(SamplingMapping.ToWire(local[i].Finish), got[i].Finish);
            // The hypothesis of rank i is the enumeration's i-th best continuation, with its score.
            Assert.Equal(enumerated[i].Ids, got[i].Ids);
            Assert.Equal(enumerated[i].Score, got[i].Logprobs.Sum(l => (double)l.Logprob) / Math.Pow(got[i].Ids.Count, p.LengthPenalty), 3);
        }
    }

    [SharedDataFact]
    public async Task Openai_completions_return_n_indexed_choices_streamed_or_not_and_beams()
    {
        using var http = new HttpClient { BaseAddress = f.Cluster.OpenAiBase, Timeout = TimeSpan.FromSeconds(60) };
        var p = new SamplingParameters { Temperature = 0.9f, Seed = 4242, MaxTokens = 40, N = 3 };
        var expected = Local(p);
        var body = new Dictionary<string, object> { ["model"] = "stories260K.bin", ["prompt"] = Prompt, ["n"] = 3, ["seed"] = 4242, ["temperature"] = 0.9, ["max_tokens"] = 40 };

        using (var response = await http.PostAsJsonAsync("completions", body))
        {
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.True(response.StatusCode == HttpStatusCode.OK, doc.RootElement.ToString());
            var choices = doc.RootElement.GetProperty("choices").EnumerateArray().ToList();
            Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
            Assert.Equal(expected.Select(o => o.Text), choices.Select(c => c.GetProperty("text").GetString()));
            Assert.Equal(expected.Sum(o => o.Ids.Count), doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }

        body["stream"] = true;
        using (var response = await http.PostAsJsonAsync("completions", body))
        {
            var texts = new string[3];
            var finished = new bool[3];
            foreach (var line in (await response.Content.ReadAsStringAsync()).Split('\n'))
            {
                if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
                using var e = JsonDocument.Parse(line["data: ".Length..]);
                foreach (var c in e.RootElement.GetProperty("choices").EnumerateArray())
                {
                    int i = c.GetProperty("index").GetInt32();
                    texts[i] += c.GetProperty("text").GetString();
                    finished[i] |= c.GetProperty("finish_reason").ValueKind == JsonValueKind.String;
                }
            }
            Assert.Equal(expected.Select(o => o.Text), texts);
            Assert.All(finished, Assert.True);
        }

        // best_of > n cannot stream (OpenAI refuses it too).
        body["best_of"] = 4;
        using (var response = await http.PostAsJsonAsync("completions", body))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("best_of", doc.RootElement.GetProperty("error").GetProperty("param").GetString());
        }

        // vLLM's beam search extension: the local search's hypotheses, ranked.
        var prompt = f.Tokenizer.Encode("Once upon a time", addBos: true);
        var beams = Local(new SamplingParameters { NumBeams = 3, N = 2, MaxTokens = 6 }, prompt);
        using (var response = await http.PostAsJsonAsync("completions", new { model = "stories260K.bin", prompt = "Once upon a time", n = 2, use_beam_search = true, best_of = 3, max_tokens = 6 }))
        {
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.True(response.StatusCode == HttpStatusCode.OK, doc.RootElement.ToString());
            Assert.Equal(beams.Select(o => o.Text), doc.RootElement.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("text").GetString()));
        }
    }

    public static TheoryData<string, string> BadCombinations() => new()
    {
        { "n0", "sampling.n must be in [1, 128]" },
        { "n_huge", "sampling.n must be in [1, 128]" },
        { "best_of_below_n", "sampling.best_of must be in [n=3, 128]" },
        { "best_of_with_beams", "sampling.best_of is not used with beam search" },
        { "n_above_beams", "sampling.n must be <= num_beams=2" },
        { "stop_with_beams", "sampling.stop strings are not supported with beam search" },
        { "policy_with_beams", "kv_policy must be dense with beam search" },
    };

    [SharedDataTheory]
    [MemberData(nameof(BadCombinations))]
    public async Task Bad_combinations_are_invalid_arguments_naming_the_field(string kind, string expected)
    {
        var s = new SamplingParams { MaxTokens = 4 };
        var request = new GenerateRequest { Text = "Once", Sampling = s };
        switch (kind)
        {
            case "n0": s.N = 0; break;
            case "n_huge": s.N = int.MaxValue; break;
            case "best_of_below_n": s.N = 3; s.BestOf = 2; break;
            case "best_of_with_beams": s.BeamSearch = new BeamSearchParams { NumBeams = 2 }; s.BestOf = 3; break;
            case "n_above_beams": s.BeamSearch = new BeamSearchParams { NumBeams = 2 }; s.N = 3; break;
            case "stop_with_beams": s.BeamSearch = new BeamSearchParams { NumBeams = 2 }; s.Stop.Add("."); break;
            case "policy_with_beams": s.BeamSearch = new BeamSearchParams { NumBeams = 2 }; request.KvPolicy = PolicyMapping.ToWire("window(16)"); break;
        }
        var e = await Assert.ThrowsAsync<RpcException>(() => GenerateAsync(request));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(expected, e.Status.Detail);
    }

    [SharedDataFact]
    public async Task Resuming_a_session_with_several_outputs_is_refused_with_the_reason()
    {
        var started = new TaskCompletionSource<string>();
        var s = new SamplingParams { MaxTokens = 4, N = 2, Seed = 1 };
        var outputs = await GenerateAsync(new GenerateRequest { Text = "Once", Sampling = s }, started);
        Assert.Equal(2, outputs.Count);
        var session = await started.Task;
        var e = await Assert.ThrowsAsync<RpcException>(() => f.Cluster.ResumeAsync(session, -1));
        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Contains("several outputs", e.Status.Detail);
    }

    private Task<List<OutputSeen>> GenerateAsync(GenerateRequest request, TaskCompletionSource<string>? session = null) =>
        MultiOutputStream.ReadAsync(new LlmCluster.V1.Gateway.GatewayClient(f.Cluster.Client).Generate(request), id => session?.TrySetResult(id));
}
