using System.Diagnostics;
using Cluster.Redis.Sessions;
using Cluster.Rpc;
using Cluster.Rpc.Client;
using Cluster.Rpc.Server;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// One Generate request (DESIGN.md, "Request flow"): validate and tokenize, open the session, prefill
/// on one worker, stream its first token, then decode on another and stream the rest. Every token is
/// appended to the session's token log before it is sent.
/// </summary>
internal sealed class GenerateCall(GatewayService gateway, GenerateRequest request, IServerStreamWriter<GenerateResponse> responses, ServerCallContext context)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew(); // TTFT and e2e count from arrival
    private readonly GatewayMetrics _metrics = gateway.Metrics;
    private TimeSpan? _firstToken, _lastToken;
    private int _generated;
    private string _sessionId = "";

    public async Task RunAsync()
    {
        _metrics.Waiting.Add(1);
        bool waiting = true, running = false;
        CancellationTokenSource? cts = null;
        try
        {
            var (prompt, p, wireSampling, policy) = Validate();
            _sessionId = string.IsNullOrEmpty(request.SessionId) ? Guid.NewGuid().ToString("N") : request.SessionId;
            var session = new SessionInfo
            {
                Id = _sessionId,
                Model = gateway.Host.Path,
                KvPolicy = policy,
                PromptTokens = prompt.Length,
                Parameters = new Dictionary<string, string> { ["seed"] = p.Seed!.Value.ToString(), ["max_tokens"] = p.MaxTokens.ToString() },
            };
            if (!await gateway.Sessions.TryCreateAsync(session, context.CancellationToken))
                throw new RpcException(StatusCode.AlreadyExists, $"session '{_sessionId}' exists; continuing a session with a new prompt is not supported yet (omit session_id for a new one)");
            cts = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
            gateway.Live[_sessionId] = cts;
            _metrics.PromptTokens.Add(prompt.Length);
            await responses.WriteAsync(new GenerateResponse { Started = new Started { SessionId = _sessionId, PromptTokens = prompt.Length } });

            var options = new CallOptions(Deadline: context.Deadline, CancellationToken: cts.Token);
            _metrics.QueueTime.Record(_clock.Elapsed.TotalSeconds);
            _metrics.Waiting.Add(-1);
            waiting = false;
            _metrics.Running.Add(1);
            running = true;

            PrefillResponse first;
            using (var lease = gateway.Prefill.Acquire())
            {
                await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { PrefillWorker = lease.Worker.Address.Authority }, cts.Token);
                first = await Call(lease, w => w.Channel.UnaryAsync(PrefillMethods.Prefill, new PrefillRequest
                {
                    SessionId = _sessionId,
                    PromptTokenIds = { prompt },
                    Sampling = wireSampling,
                    KvPolicy = PolicyMapping.ToWire(policy),
                    CacheManager = gateway.Options.CacheManager,
                }, options));
            }
            await EmitAsync([first.FirstTokenId], first.Text, first.FirstLogprob is { } lp ? [lp] : []);

            var finish = first.Finished ? first.FinishReason : await DecodeAsync(first, prompt, wireSampling, options);
            await CompleteAsync(finish, prompt.Length);
        }
        catch (Exception e) when (e is OperationCanceledException || cts?.IsCancellationRequested == true && e is RpcException { StatusCode: StatusCode.Cancelled })
        {
            // The client went away (nothing to send) or Abort was called (tell the client).
            await MarkAsync(SessionStatus.Aborted, "abort");
            if (!context.CancellationToken.IsCancellationRequested && _sessionId.Length > 0)
                await CompleteAsync(LlmCluster.V1.FinishReason.Abort, 0);
        }
        catch (RpcException e)
        {
            _metrics.Errors.Add(1, new KeyValuePair<string, object?>("code", e.StatusCode.ToString()));
            await MarkAsync(SessionStatus.Failed, null);
            throw;
        }
        finally
        {
            if (waiting) _metrics.Waiting.Add(-1);
            if (running) _metrics.Running.Add(-1);
            if (_sessionId.Length > 0) gateway.Live.TryRemove(_sessionId, out _);
            cts?.Dispose();
        }
    }

    private (int[] Prompt, Engine.Sampling.SamplingParameters P, SamplingParams Wire, string Policy) Validate()
    {
        var host = gateway.Host;
        int[] prompt = request.PromptCase switch
        {
            GenerateRequest.PromptOneofCase.Text when request.Text.Length > 0 => host.Tokenizer.Encode(request.Text, addBos: true),
            GenerateRequest.PromptOneofCase.TokenIds when request.TokenIds.Ids.Count > 0 => request.TokenIds.Ids.ToArray(),
            _ => throw new RpcException(StatusCode.InvalidArgument, "prompt is empty: set text or token_ids"),
        };
        RequestChecks.Prompt(prompt, host.Config);
        var p = SamplingMapping.ToEngine(request.Sampling, host.Config.VocabSize);
        if (p.N != 1 || p.IsBeamSearch)
            throw new RpcException(StatusCode.Unimplemented, "n > 1 and beam search are not served by the cluster yet (llmctl generate --n/--num-beams runs them locally)");
        p = p.WithResolvedSeed(); // fixed here so that every worker, and a restarted one, draws the same tokens
        var policy = PolicyMapping.ToSpec(request.KvPolicy) ?? gateway.Options.Policy;
        PolicyMapping.Parse(policy, host.Policies);
        return (prompt, p, SamplingMapping.WithSeed(request.Sampling, p.Seed!.Value), policy);
    }

    private async Task<LlmCluster.V1.FinishReason> DecodeAsync(PrefillResponse first, int[] prompt, SamplingParams sampling, CallOptions options)
    {
        using var lease = gateway.Decode.Acquire();
        await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { DecodeWorker = lease.Worker.Address.Authority }, options.CancellationToken);
        var finish = LlmCluster.V1.FinishReason.Unspecified;
        await Call(lease, async w =>
        {
            using var call = w.Channel.ServerStreaming(DecodeMethods.Decode, new DecodeRequest
            {
                Kv = first.Kv,
                Sampling = sampling,
                PromptTokenIds = { prompt },
                GeneratedTokenIds = { first.FirstTokenId },
                CacheManager = gateway.Options.CacheManager,
            }, options);
            await foreach (var r in call.ReadAllAsync(options.CancellationToken))
            {
                switch (r.ResponseCase)
                {
                    case DecodeResponse.ResponseOneofCase.Chunk:
                        await EmitAsync(r.Chunk.TokenIds, r.Chunk.Text, r.Chunk.Logprobs);
                        break;
                    case DecodeResponse.ResponseOneofCase.Checkpoint:
                        await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate
                        {
                            CheckpointId = r.Checkpoint.Version.ToString(),
                            CheckpointTokenIndex = r.Checkpoint.TokenCount - prompt.Length,
                        }, CancellationToken.None);
                        break;
                    case DecodeResponse.ResponseOneofCase.Complete:
                        finish = r.Complete.FinishReason;
                        break;
                }
            }
            return 0;
        });
        return finish == LlmCluster.V1.FinishReason.Unspecified
            ? throw new RpcException(StatusCode.Internal, "decode worker ended the stream without a completion")
            : finish;
    }

    /// <summary>A worker call; UNAVAILABLE takes the worker out of rotation until its health check passes.</summary>
    private static async Task<T> Call<T>(WorkerLease lease, Func<Worker, Task<T>> call)
    {
        try
        {
            return await call(lease.Worker);
        }
        catch (RpcException e)
        {
            WorkerPool.ReportFailure(lease.Worker, e);
            throw e.StatusCode == StatusCode.Unavailable
                ? new RpcException(StatusCode.Unavailable, $"{lease.Worker.Address.Authority} unavailable: {e.Message}")
                : e;
        }
    }

    /// <summary>Logs the tokens, then sends them (a resumed client must never miss a sent token).</summary>
    private async Task EmitAsync(IReadOnlyList<int> ids, string text, IEnumerable<LlmCluster.V1.TokenLogprob> logprobs)
    {
        int offset = _generated;
        for (int i = 0; i < ids.Count; i++)
            await gateway.Sessions.TryAppendTokenAsync(_sessionId, new TokenEntry(offset + i, ids[i], i == ids.Count - 1 ? text : ""), CancellationToken.None);
        var chunk = new Chunk { Index = 0, TokenIds = { ids }, Text = text, TokenOffset = offset };
        chunk.Logprobs.Add(logprobs);
        await responses.WriteAsync(new GenerateResponse { Chunk = chunk });

        var now = _clock.Elapsed;
        if (ids.Count > 0)
        {
            if (_firstToken is null)
            {
                _firstToken = now;
                _metrics.TimeToFirstToken.Record(now.TotalSeconds);
            }
            else if (_lastToken is { } last)
            {
                _metrics.InterTokenLatency.Record((now - last).TotalSeconds);
            }
            _lastToken = now;
            _generated += ids.Count;
            _metrics.GenerationTokens.Add(ids.Count);
        }
    }

    private async Task CompleteAsync(LlmCluster.V1.FinishReason finish, int promptTokens)
    {
        var reason = finish.ToString().ToLowerInvariant().Replace("finishreason", "");
        var e2e = _clock.Elapsed;
        double ttft = _firstToken?.TotalSeconds ?? 0;
        double tpot = _generated > 1 ? (e2e.TotalSeconds - ttft) / (_generated - 1) : 0;
        await gateway.Sessions.CompleteTokenLogAsync(_sessionId, reason, CancellationToken.None);
        await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate
        {
            Status = finish == LlmCluster.V1.FinishReason.Abort ? SessionStatus.Aborted : SessionStatus.Finished,
            GeneratedTokens = _generated,
        }, CancellationToken.None);
        _metrics.EndToEnd.Record(e2e.TotalSeconds);
        if (_generated > 1) _metrics.TimePerOutputToken.Record(tpot);
        _metrics.Success.Add(1, new KeyValuePair<string, object?>("finished_reason", reason));
        await responses.WriteAsync(new GenerateResponse
        {
            Complete = new Complete
            {
                Index = 0,
                FinishReason = finish,
                Usage = new Usage { PromptTokens = promptTokens, CompletionTokens = _generated },
                Timings = new Timings { TtftSeconds = ttft, TpotSeconds = tpot, E2ESeconds = e2e.TotalSeconds },
            },
        });
    }

    private async Task MarkAsync(SessionStatus status, string? finish)
    {
        if (_sessionId.Length == 0) return;
        try
        {
            if (finish is not null) await gateway.Sessions.CompleteTokenLogAsync(_sessionId, finish, CancellationToken.None);
            await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { Status = status, GeneratedTokens = _generated }, CancellationToken.None);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            gateway.Logger.LogSessionStoreFailure(_sessionId, e.Message);
        }
    }
}
