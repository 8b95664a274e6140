using System.Runtime.ExceptionServices;
using Cluster.Serving.Routing;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// A request with several outputs (n &gt; 1, best_of &gt; n, or beam search) on top of one
/// <see cref="GenerateCall"/>. The prompt is prefilled once. Sampled outputs: prefill draws the first
/// token of each (output i with the seed's stream i, as the local generator), then each output decodes
/// in its own Decode call from the same prompt KV, checkpointing under its own id, and streams with its
/// index; with best_of &gt; n all run, and the n with the highest cumulative logprob are sent, ranked,
/// once all have finished. Beam search: one Decode call runs the whole search on one worker, and its
/// final hypotheses are sent when it ends. Each output has its own token log
/// (<see cref="SessionRecord.OutputId"/>), written before the output's tokens are sent.
/// </summary>
internal sealed class OutputCalls(GenerateCall call, Engine.Sampling.SamplingParameters p, SamplingParams wire)
{
    /// <summary>Runs the outputs; returns the finish reason of the last one to end (the session's).</summary>
    public async Task<FinishReason> RunAsync(int[] prompt, string policy, CallOptions options)
    {
        // best_of ranks by cumulative logprob: the workers report logprobs even when the client did not
        // ask (computing them does not change a draw); the client gets them only if it asked.
        bool ranked = !p.IsBeamSearch && p.Outputs > p.N;
        var sampling = wire;
        if (ranked && !wire.Logprobs)
        {
            sampling = wire.Clone();
            sampling.Logprobs = true;
            sampling.TopLogprobs = 0;
        }
        bool held = ranked || p.IsBeamSearch;
        call.Outputs = [.. Enumerable.Range(0, p.N).Select(i => new RelayedOutput(i, SessionRecord.OutputId(call.SessionId, i)))];
        var work = held
            ? Enumerable.Range(0, p.IsBeamSearch ? p.N : p.Outputs).Select(i => new RelayedOutput(i, "", held: true)).ToList()
            : call.Outputs;

        var prefill = await call.PrefillAsync(prompt, sampling, policy, options);
        if (p.IsBeamSearch)
        {
            await BeamSearchAsync(work, prefill.Kv, prompt, sampling, options);
        }
        else
        {
            if (prefill.Outputs.Count != work.Count)
                throw new RpcException(new Status(StatusCode.Internal, $"prefill returned {prefill.Outputs.Count} first tokens for {work.Count} outputs"));
            await AllAsync(work.Select(o => (Func<CallOptions, Task>)(o2 => SampleAsync(o, prefill.Kv, prefill.Outputs[o.Index], prompt, sampling, o2))).ToList(), options);
        }
        if (!held) return work.OrderBy(o => o.Index).Last().Finish;

        // The outputs to return, best first: beams come ranked by score; best_of ranks by cumulative logprob.
        var chosen = p.IsBeamSearch ? work : [.. work.OrderByDescending(o => o.CumulativeLogprob).ThenBy(o => o.Index).Take(p.N)];
        for (int r = 0; r < chosen.Count && r < call.Outputs.Count; r++)
        {
            var from = chosen[r];
            var to = call.Outputs[r];
            await call.EmitAsync(to, from.HeldIds, from.HeldText.ToString(), wire.Logprobs ? from.HeldLogprobs : []);
            to.Finish = from.Finish;
            await call.CompleteOutputAsync(to, from.Finish);
        }
        return chosen.Count > 0 ? chosen[^1].Finish : FinishReason.Stop;
    }

    /// <summary>One sampled output: its first token from prefill, the rest from a decode worker.</summary>
    private async Task SampleAsync(RelayedOutput output, KvHandle kv, FirstToken first, int[] prompt, SamplingParams sampling, CallOptions options)
    {
        await call.EmitAsync(output, [first.TokenId], first.Text, first.Logprob is { } lp ? [lp] : []);
        output.Finish = first.Finished ? first.FinishReason : await call.DecodeAsync(output, kv, prompt, [first.TokenId], sampling, options);
        if (!output.Held) await call.CompleteOutputAsync(output, output.Finish);
    }

    /// <summary>
    /// Runs the outputs side by side. The first to fail stops the others, and its error (not the
    /// cancellations it caused) is the request's.
    /// </summary>
    private static async Task AllAsync(IReadOnlyList<Func<CallOptions, Task>> outputs, CallOptions options)
    {
        using var siblings = CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken);
        var shared = options.WithCancellationToken(siblings.Token);
        var tasks = outputs.Select(async run =>
        {
            try
            {
                await run(shared);
            }
            catch
            {
                siblings.Cancel();
                throw;
            }
        }).ToList();
        try
        {
            await Task.WhenAll(tasks);
        }
        catch
        {
            var errors = tasks.Where(t => t.IsFaulted).Select(t => t.Exception!.InnerException!).ToList();
            var cause = errors.FirstOrDefault(e => !IsCancellation(e)) ?? errors.FirstOrDefault();
            if (cause is null) throw;
            ExceptionDispatchInfo.Throw(cause);
        }
    }

    private static bool IsCancellation(Exception e) => e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled };

    /// <summary>
    /// The whole beam search on one decode worker (beams are compared every step). The hypotheses come
    /// only at the end and are held until the stream completes, so a worker lost midway costs a rerun
    /// on another worker from the prompt's KV, never a duplicate token.
    /// </summary>
    private async Task BeamSearchAsync(List<RelayedOutput> beams, KvHandle kv, int[] prompt, SamplingParams sampling, CallOptions options)
    {
        const int maxRestarts = 2;
        var gateway = call.Gateway;
        Uri? failed = null;
        for (int attempt = 0; ; attempt++)
        {
            using var lease = gateway.Decode.Acquire(except: failed);
            try
            {
                await BeamSearchOnAsync(lease, beams, kv, prompt, sampling, options);
                return;
            }
            catch (RpcException e) when (attempt < maxRestarts && GenerateCall.IsWorkerLoss(e) && !options.CancellationToken.IsCancellationRequested)
            {
                WorkerPool.ReportFailure(lease.Worker, new RpcException(new Status(StatusCode.Unavailable, e.Message)));
                failed = lease.Worker.Address;
                foreach (var b in beams) b.Clear();
                gateway.Logger.LogDecodeRestart(call.SessionId, lease.Worker.Address.Authority, 0, e.Message);
            }
        }
    }

    private async Task BeamSearchOnAsync(WorkerLease lease, List<RelayedOutput> beams, KvHandle kv, int[] prompt, SamplingParams sampling, CallOptions options)
    {
        using var decode = new LlmCluster.V1.Decode.DecodeClient(lease.Worker.Channel).Decode(new DecodeRequest
        {
            Kv = kv,
            Sampling = sampling,
            PromptTokenIds = { prompt },
            CacheManager = call.Gateway.Options.CacheManager,
        }, options);
        await foreach (var r in decode.ResponseStream.ReadAllAsync(options.CancellationToken))
        {
            int index = r.ResponseCase switch
            {
                DecodeResponse.ResponseOneofCase.Chunk => r.Chunk.Index,
                DecodeResponse.ResponseOneofCase.Complete => r.Complete.Index,
                _ => 0,
            };
            if (index < 0 || index >= beams.Count)
                throw new RpcException(new Status(StatusCode.Internal, $"decode worker sent hypothesis {index} of {beams.Count}"));
            if (r.ResponseCase == DecodeResponse.ResponseOneofCase.Chunk) beams[index].Hold(r.Chunk.TokenIds, r.Chunk.Text, r.Chunk.Logprobs);
            else if (r.ResponseCase == DecodeResponse.ResponseOneofCase.Complete) beams[index].Finish = r.Complete.FinishReason;
        }
        // A search that ends early (max_tokens 1, few finished hypotheses) may return fewer than n.
        if (beams.Any(b => b.HeldIds.Count > 0 && b.Finish == FinishReason.Unspecified))
            throw new RpcException(new Status(StatusCode.Unavailable, "decode worker ended the beam search without completing every hypothesis"));
        beams.RemoveAll(b => b.Finish == FinishReason.Unspecified);
    }
}
