using Grpc.Core;
using LlmCluster.V1;
using Xunit;

namespace Cluster.IntegrationTests;

/// <summary>What the client saw of one output of a request with several (n, best_of, beams).</summary>
public sealed class OutputSeen
{
    public List<int> Ids { get; } = [];
    public string Text { get; set; } = "";
    public List<TokenLogprob> Logprobs { get; } = [];
    public Complete? Complete { get; set; }
    public FinishReason Finish => Complete!.FinishReason;
}

public static class MultiOutputStream
{
    /// <summary>Reads a Generate stream into its outputs by index; asserts that each output's offsets run
    /// on without gap or repeat, nothing follows its Complete, and every index 0..count-1 completes once.</summary>
    /// <param name="onChunk">Called after each chunk with every output so far (e.g. to kill a worker midway).</param>
    public static async Task<List<OutputSeen>> ReadAsync(AsyncServerStreamingCall<GenerateResponse> call, Action<string>? onStarted = null, Func<IReadOnlyDictionary<int, OutputSeen>, Task>? onChunk = null)
    {
        using var _ = call;
        var outputs = new SortedDictionary<int, OutputSeen>();
        OutputSeen For(int i) => outputs.TryGetValue(i, out var o) ? o : outputs[i] = new OutputSeen();
        await foreach (var r in call.ResponseStream.ReadAllAsync())
        {
            switch (r.ResponseCase)
            {
                case GenerateResponse.ResponseOneofCase.Started:
                    onStarted?.Invoke(r.Started.SessionId);
                    break;
                case GenerateResponse.ResponseOneofCase.Chunk:
                    var o = For(r.Chunk.Index);
                    Assert.Null(o.Complete);
                    Assert.Equal(o.Ids.Count, r.Chunk.TokenOffset);
                    o.Ids.AddRange(r.Chunk.TokenIds);
                    o.Text += r.Chunk.Text;
                    o.Logprobs.AddRange(r.Chunk.Logprobs);
                    if (onChunk is not null) await onChunk(outputs);
                    break;
                case GenerateResponse.ResponseOneofCase.Complete:
                    Assert.Null(For(r.Complete.Index).Complete);
                    For(r.Complete.Index).Complete = r.Complete;
                    break;
            }
        }
        Assert.Equal(Enumerable.Range(0, outputs.Count), outputs.Keys);
        Assert.All(outputs.Values, o => Assert.NotNull(o.Complete));
        return [.. outputs.Values];
    }
}
