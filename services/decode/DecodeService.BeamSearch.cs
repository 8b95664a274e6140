using Cluster.Engine.Generation;
using Cluster.Serving.Hosting;
using Cluster.Serving.Mapping;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Decode;

public sealed partial class DecodeService
{
    /// <summary>
    /// Beam search for one request, all beams on this worker (they are compared every step): the engine's
    /// <see cref="BeamSearch"/> starts from the prompt's KV that prefill stored and runs as a stepped job
    /// of the continuous batch, one search step between two batched steps of the other sequences. A
    /// hypothesis is final only when the search ends, so the best n are streamed then, each with its
    /// rank as index and its own completion. No checkpoints: a search is restarted whole, not resumed.
    /// </summary>
    private async Task BeamSearchAsync(DecodeRequest request, Engine.Sampling.SamplingParameters p, IServerStreamWriter<DecodeResponse> responses, ServerCallContext context)
    {
        var model = _host.Model!;
        var prompt = request.PromptTokenIds.ToArray();
        RequestChecks.Prompt(prompt, model.Config, "prompt_token_ids");
        if (request.GeneratedTokenIds.Count > 0) throw new InvalidRequestException("generated_token_ids must be empty with beam search: a search starts from the prompt and cannot be resumed midway");
        if (request.HistoryTokenCount != 0) throw new InvalidRequestException("history_token_count must be 0 with beam search: it runs on a conversation's first turn only");
        var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
        if (spec != "dense") throw new InvalidRequestException($"kv.policy must be dense with beam search (beams copy the whole cache), got {spec}");

        var ct = context.CancellationToken;
        var cacheManager = _channels.Get(string.IsNullOrEmpty(request.CacheManager) ? _options.CacheManager : request.CacheManager);
        // Blocks for every beam's whole cache up front, as the search may keep num_beams of them at once (a
        // stepped job runs its own passes: its caches are not paged, and it is never preempted).
        using var reservation = await Admission.AcquireAsync(WorstCaseTokens(request, prompt.Length, p.MaxTokens) * p.NumBeams, ct);
        var (handle, cache, _, _, _) = await LoadOrRebuildAsync(request, cacheManager, prompt, history: 0, maxTokens: 0, p.MaxTokens, ct);
        if (handle.TokenCount != prompt.Length)
        {
            cache.Dispose();
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the KV holds {handle.TokenCount} tokens; beam search starts from the prompt's {prompt.Length}"));
        }

        var reader = _batcher.AddStepped(new BeamSearch(model, _host.Tokenizer, p).Steps(prompt, cache, ct));
        var produced = new int[p.N];
        await foreach (var chunk in reader.ReadAllAsync(CancellationToken.None))
        {
            int i = chunk.Index;
            var dc = new DecodeChunk { Index = i, OutputIndex = produced[i], Text = chunk.Text };
            if (chunk.TokenId is int id)
            {
                dc.TokenIds.Add(id);
                if (SamplingMapping.ToWire(chunk.Logprobs) is { } lp) dc.Logprobs.Add(lp);
                produced[i]++;
            }
            if (dc.TokenIds.Count > 0 || dc.Text.Length > 0) await responses.WriteAsync(new DecodeResponse { Chunk = dc });
            if (chunk.Finish is { } finish)
                await responses.WriteAsync(new DecodeResponse { Complete = new DecodeComplete { Index = i, FinishReason = SamplingMapping.ToWire(finish), GeneratedTokens = produced[i] } });
        }
        ct.ThrowIfCancellationRequested();
    }
}
