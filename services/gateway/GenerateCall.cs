using System.Diagnostics;
using Cluster.Sessions;
using Grpc.Core;
using Cluster.Serving.Mapping;
using Cluster.Serving.Hosting;
using Cluster.Serving.Routing;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// One Generate request (DESIGN.md, "Request flow"): validate and tokenize, open the session, prefill
/// on one worker, stream its first token, then decode on another and stream the rest. Every token is
/// appended to the session's token log before it is sent.
/// </summary>
internal sealed class GenerateCall(GatewayService gateway, IServerStreamWriter<GenerateResponse> responses, ServerCallContext context)
{
    private readonly long _arrival = Serving.Hosting.RequestArrival.Timestamp(context); // TTFT and e2e count from arrival
    private readonly GatewayMetrics _metrics = gateway.Metrics;
    private TimeSpan? _firstToken, _lastToken;
    private int _generatedAtFirst; // tokens counted once this call's first chunk was sent (a resume starts past 0)
    private int _generated, _promptTokens;
    private string _sessionId = ""; // this turn's record and token log
    private string _kvSession = ""; // whose KV the cache manager holds (the conversation's)
    private string _policy = "dense"; // the session's KV policy: a decode worker that must rebuild the KV needs it
    private int _history; // KV tokens of earlier turns, before this turn's prompt
    private KvRecipe? _recipe; // how those earlier turns made the KV, for a worker that must rebuild it
    private bool _waiting;
    private Func<Task>? _beforeFirstToken; // runs once, before the first token is logged
    // What the client sees: one output, or n (OutputCalls). Streams of several outputs share the writer.
    private List<RelayedOutput> _outputs = [];
    private readonly SemaphoreSlim _write = new(1, 1);

    internal GatewayService Gateway => gateway;
    internal string SessionId => _sessionId;

    /// <summary>The outputs the client sees (set by <see cref="OutputCalls"/> for several).</summary>
    internal List<RelayedOutput> Outputs { get => _outputs; set => _outputs = value; }

    /// <summary>A new request: validate, open the session, prefill, then decode. With the id of an
    /// existing session: the conversation's next turn (<see cref="NextTurnAsync"/>).</summary>
    public Task RunAsync(GenerateRequest request) => StreamAsync(async (options, cts) =>
    {
        // A session id names an existing conversation, never a new one: a mistyped or expired id must
        // not silently start over (as Resume and DeleteSession, it is NOT_FOUND).
        if (!string.IsNullOrEmpty(request.SessionId))
            return await gateway.Sessions.GetAsync(request.SessionId, context.CancellationToken) is { } existing
                ? await NextTurnAsync(existing, request, options, cts)
                : throw new RpcException(new Status(StatusCode.NotFound, $"session '{request.SessionId}' not found (expired, deleted or never started); leave session_id empty to start a new one"));
        var (prompt, p, wireSampling, policy) = Validate(request, addBos: true);
        _sessionId = _kvSession = Guid.NewGuid().ToString("N");
        _outputs = [new RelayedOutput(0, _sessionId)];
        _policy = policy;
        _promptTokens = prompt.Length;
        if (!await gateway.Sessions.TryCreateAsync(SessionRecord.Create(_sessionId, gateway.Host.Path, prompt, wireSampling, policy, p.MaxTokens), context.CancellationToken))
            throw new RpcException(new Status(StatusCode.AlreadyExists, $"session '{_sessionId}' was created by a concurrent request"));
        gateway.Live[_sessionId] = cts;
        _metrics.PromptTokens.Add(prompt.Length);
        await responses.WriteAsync(new GenerateResponse { Started = new Started { SessionId = _sessionId, TurnId = _sessionId, PromptTokens = prompt.Length } });
        Started();

        if (p.Outputs > 1 || p.IsBeamSearch) return await new OutputCalls(this, p, wireSampling).RunAsync(prompt, policy, options);
        var (decodeWorker, prefetchStarted) = StartKvPrefetch(prompt.Length, options);
        var response = await PrefillAsync(prompt, wireSampling, policy, options);
        var first = response.Outputs.Single();
        await EmitAsync(_outputs[0], [first.TokenId], first.Text, first.Logprob is { } lp ? [lp] : []);
        if (first.Finished) return first.FinishReason;
        // The Decode call goes after the worker has taken the hint (an answer that is normally long in by
        // now), so that it cannot overtake it and fetch for itself while a prefetch starts beside it; a
        // worker that has not answered within a second (unreachable) is not waited for longer.
        try
        {
            await prefetchStarted.WaitAsync(TimeSpan.FromSeconds(1), context.CancellationToken);
        }
        catch (TimeoutException)
        {
        }
        return await DecodeAsync(_outputs[0], response.Kv, prompt, [first.TokenId], wireSampling, options, holder: decodeWorker);
    });

    /// <summary>
    /// Chooses the decode worker now, as prefill starts, and asks it to fetch the prompt's KV while prefill
    /// runs (Decode.PrefetchKv: its get follows the prefill worker's put layer by layer), so that decode
    /// starts with the KV in place instead of fetching it after the first token. "host:port" of that
    /// worker, for <see cref="DecodeAsync"/> to prefer; null when prefetching is off or no decode worker is
    /// healthy (decode then chooses, and fails, as before). Started completes when the worker has answered
    /// the hint, however (a hint that fails costs nothing); prefill runs meanwhile.
    /// </summary>
    private (string? Holder, Task Started) StartKvPrefetch(int promptTokens, CallOptions options)
    {
        if (!gateway.Options.KvPrefetch) return (null, Task.CompletedTask);
        WorkerLease lease;
        try
        {
            lease = gateway.Decode.Acquire();
        }
        catch (RpcException)
        {
            return (null, Task.CompletedTask);
        }
        using (lease)
        {
            var call = new LlmCluster.V1.Decode.DecodeClient(lease.Worker.Channel).PrefetchKvAsync(new PrefetchKvRequest
            {
                SessionId = _kvSession,
                TokenCount = promptTokens,
                CacheManager = gateway.Options.CacheManager,
            }, cancellationToken: options.CancellationToken);
            var started = call.ResponseAsync.ContinueWith(t => { _ = t.Exception; call.Dispose(); }, TaskScheduler.Default);
            return (lease.Worker.Address.Authority, started);
        }
    }

    /// <summary>Prefills this turn's prompt on a prefill worker (on top of the conversation's stored KV
    /// when the turn has history) and returns its first token and KV handle.
    /// A worker that refuses the connection (dead, restarting) never saw the request, so it goes to
    /// another healthy prefill worker if there is one; other failures are the request's answer.</summary>
    internal async Task<PrefillResponse> PrefillAsync(int[] prompt, SamplingParams sampling, string policy, CallOptions options)
    {
        Uri? refused = null;
        while (true)
        {
            using var lease = gateway.Prefill.Acquire(except: refused);
            await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { PrefillWorker = lease.Worker.Address.Authority }, options.CancellationToken);
            try
            {
                return await Call(lease, w => new LlmCluster.V1.Prefill.PrefillClient(w.Channel).PrefillAsync(new PrefillRequest
                {
                    SessionId = _kvSession,
                    PromptTokenIds = { prompt },
                    Sampling = sampling,
                    KvPolicy = PolicyMapping.ToWire(policy),
                    CacheManager = gateway.Options.CacheManager,
                    Continuation = _history > 0 ? new PrefillContinuation { HistoryTokenCount = _history, History = _recipe } : null,
                }, options).ResponseAsync);
            }
            catch (RpcException e) when (refused is null && NeverReached(e) && gateway.Prefill.HasHealthy(except: lease.Worker.Address))
            {
                refused = lease.Worker.Address;
                gateway.Logger.LogPrefillRetry(_sessionId, refused.Authority, e.Status.Detail);
            }
        }
    }

    /// <summary>The call failed before its request reached the worker: the connection was refused or
    /// could not be made (so sending it elsewhere cannot run it twice).</summary>
    internal static bool NeverReached(RpcException e)
    {
        if (e.StatusCode != StatusCode.Unavailable) return false;
        for (var x = e.Status.DebugException; x is not null; x = x.InnerException)
            if (x is System.Net.Sockets.SocketException s && s.SocketErrorCode is System.Net.Sockets.SocketError.ConnectionRefused or System.Net.Sockets.SocketError.HostUnreachable or System.Net.Sockets.SocketError.NetworkUnreachable)
                return true;
        return false;
    }

    /// <summary>
    /// The next turn of a conversation (StreamingLLM's multi-round chat, Xiao et al. 2023): only the
    /// new tokens are prefilled, on top of the KV the previous turn left in the cache manager (which
    /// lacks that turn's last token: it is fed first). The prefill worker makes room per the session's
    /// policy (<see cref="Engine.Generation.ConversationTurn"/>); a dense session whose turn would pass
    /// the model's context is refused with FAILED_PRECONDITION before anything runs.
    /// </summary>
    private async Task<LlmCluster.V1.FinishReason> NextTurnAsync(Sessions.SessionInfo conversation, GenerateRequest request, CallOptions options, CancellationTokenSource cts)
    {
        var ct = context.CancellationToken;
        var head = SessionRecord.From(conversation) ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{conversation.Id}' lacks what continuing it needs"));
        if (head.Turn != 0) throw new RpcException(new Status(StatusCode.InvalidArgument, $"'{conversation.Id}' is turn {head.Turn} of session '{head.KvSession}': continue the conversation by the session's id"));
        var (prompt, p, wireSampling, _) = Validate(request, addBos: false);
        if (p.Outputs > 1 || p.IsBeamSearch)
            throw new InvalidRequestException("sampling.n: several outputs (n, best_of or num_beams > 1) are served on a new session only; a conversation's turn continues one output");
        int last = SessionRecord.LatestTurn(conversation);
        string lastId = SessionRecord.TurnId(conversation.Id, last);
        var lastInfo = last == 0 ? conversation : await gateway.Sessions.GetAsync(lastId, ct);
        var previous = lastInfo is null ? null : SessionRecord.From(lastInfo);
        if (lastInfo is null || previous is null) throw new RpcException(new Status(StatusCode.FailedPrecondition, $"turn '{lastId}' of session '{conversation.Id}' expired or lacks its record"));
        if (previous.MultiOutput) throw new RpcException(new Status(StatusCode.FailedPrecondition, $"turn '{lastId}' had several outputs (n, best_of or num_beams > 1): which one the conversation continues is not defined; start a new session"));
        if (lastInfo.FinishReason is null || lastInfo.GeneratedTokens < 1 || gateway.Live.ContainsKey(lastId))
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"turn '{lastId}' has not finished ({lastInfo.Status.ToString().ToLowerInvariant()}): resume it (Gateway.Resume) before the next turn"));
        // A finished turn's decode ran all its tokens but the last one (its final checkpoint holds
        // them; when that checkpoint was lost, a worker rebuilds the KV from the recipe, so the turn
        // continues exactly as the local conversation would). After an Abort, the newest checkpoint the
        // gateway saw covers the first `covered` tokens. The rest of the turn's output is fed before
        // the new prompt.
        int generated = lastInfo.GeneratedTokens;
        int covered = lastInfo.FinishReason == ReasonName(LlmCluster.V1.FinishReason.Abort) ? (int)Math.Clamp(lastInfo.CheckpointTokenIndex, 0, generated - 1) : generated - 1;
        var tail = await gateway.Sessions.ReadTokensAsync(lastId, covered - 1, generated - covered, ct);
        if (tail.Entries.Count != generated - covered || tail.Entries[0].Index != covered)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the token log of '{lastId}' lacks tokens {covered}..{generated - 1}"));

        int[] fed = [.. tail.Entries.Select(e => e.TokenId), .. prompt];
        int history = previous.History + previous.Prompt.Length + covered;
        var c = gateway.Host.Config;
        // The engine's one context check, as the worker's ConversationTurn.Feed will make it: refused here
        // before any worker runs.
        var policy = PolicyMapping.Parse(previous.Policy, gateway.Host.Policies);
        if (Engine.Compression.ContextLimit.Refusal(policy, history, fed.Length + p.MaxTokens, c.MaxPositions) is { } why)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, why));
        RequestChecks.Prompt(fed, c);

        int turn = last + 1;
        _recipe = await HistoryRecipe.BuildAsync(gateway.Sessions, conversation, turn, history, ct);
        _sessionId = SessionRecord.TurnId(conversation.Id, turn);
        _outputs = [new RelayedOutput(0, _sessionId)];
        _kvSession = conversation.Id;
        _policy = previous.Policy;
        _history = history;
        _promptTokens = prompt.Length;
        if (!await gateway.Sessions.TryCreateAsync(SessionRecord.Create(_sessionId, gateway.Host.Path, fed, wireSampling, previous.Policy, p.MaxTokens, _kvSession, history, turn), ct))
            throw new RpcException(new Status(StatusCode.AlreadyExists, $"turn {turn} of session '{conversation.Id}' was started by a concurrent request"));
        gateway.Live[_sessionId] = cts;
        _metrics.PromptTokens.Add(prompt.Length);
        await responses.WriteAsync(new GenerateResponse { Started = new Started { SessionId = conversation.Id, TurnId = _sessionId, PromptTokens = prompt.Length } });
        Started();

        // Conditional disaggregation (as NVIDIA Dynamo decides per request): a short turn runs on the
        // decode worker that holds the conversation's KV, with no transfer at all; a long one is
        // compute-bound and goes to a prefill worker.
        if (fed.Length <= gateway.Options.MaxLocalPrefill)
            return await StartOnDecodeAsync(conversation.Id, turn, fed, wireSampling, lastInfo.DecodeWorker, options);
        _metrics.TurnRoutes.Add(1, new KeyValuePair<string, object?>("route", "prefill"));
        PrefillResponse response;
        try
        {
            response = await PrefillAsync(fed, wireSampling, previous.Policy, options);
        }
        catch
        {
            // Nothing was streamed: the turn never happened, and the conversation stays where it was.
            await gateway.Sessions.DeleteAsync(_sessionId, CancellationToken.None);
            throw;
        }
        await TurnStartedAsync(conversation.Id, turn);
        var first = response.Outputs.Single();
        await EmitAsync(_outputs[0], [first.TokenId], first.Text, first.Logprob is { } lp ? [lp] : []);
        return first.Finished ? first.FinishReason : await DecodeAsync(_outputs[0], response.Kv, fed, [first.TokenId], wireSampling, options);
    }

    /// <summary>
    /// A later turn that starts on a decode worker: the one that decoded the previous turn when it is
    /// healthy (it kept the KV: no transfer), else the least loaded one, which fetches the history. The
    /// turn counts as the conversation's once its first token comes; a failure before that leaves the
    /// conversation where it was, as a failed prefill does.
    /// </summary>
    private async Task<LlmCluster.V1.FinishReason> StartOnDecodeAsync(string conversationId, int turn, int[] fed, SamplingParams sampling, string? holder, CallOptions options)
    {
        var output = _outputs[0];
        _beforeFirstToken = () => TurnStartedAsync(conversationId, turn);
        try
        {
            return await DecodeAsync(output, LatestKv(_kvSession), fed, [], sampling, options, startTurn: true, holder: holder);
        }
        catch when (output.Generated == 0)
        {
            await gateway.Sessions.DeleteAsync(_sessionId, CancellationToken.None);
            throw;
        }
    }

    /// <summary>The conversation's record names <paramref name="turn"/> as its latest (the next turn continues it).</summary>
    private Task TurnStartedAsync(string conversationId, int turn) =>
        gateway.Sessions.UpdateAsync(conversationId, new SessionUpdate { Parameters = new Dictionary<string, string> { [SessionRecord.TurnsKey] = turn.ToString() } }, CancellationToken.None);

    /// <summary>
    /// Continues a session whose stream stopped without finishing (its client went away, or its
    /// gateway died): decode restarts from the latest checkpoint with every logged token, and the new
    /// tokens go to the log and to this client. The decode worker that ran it last goes first: when the
    /// stream stopped because its client or gateway went away, that worker kept the cache (no fetch).
    /// </summary>
    /// <param name="holder">"host:port" of the decode worker that ran the stream last, if known.</param>
    public Task ContinueAsync(SessionRecord session, List<int> logged, string? holder) => StreamAsync(async (options, cts) =>
    {
        _sessionId = session.Id;
        _outputs = [new RelayedOutput(0, _sessionId) { Generated = logged.Count }];
        _kvSession = session.KvSession;
        _policy = session.Policy;
        _history = session.History;
        _promptTokens = session.Prompt.Length;
        _generated = logged.Count;
        if (!gateway.Live.TryAdd(_sessionId, cts)) throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{_sessionId}' is streaming already"));
        if (_history > 0)
        {
            var conversation = await gateway.Sessions.GetAsync(_kvSession, options.CancellationToken)
                ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{_kvSession}' of turn '{_sessionId}' expired"));
            _recipe = await HistoryRecipe.BuildAsync(gateway.Sessions, conversation, session.Turn, _history, options.CancellationToken);
        }
        await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { Status = SessionStatus.Running }, options.CancellationToken);
        Started();
        if (logged.Count == 0)
        {
            // Stopped before its first token reached the log (e.g. the session store went down during
            // prefill): prefill again. The seed is fixed, so it is the first token the stream would have had.
            var response = await PrefillAsync(session.Prompt, session.Sampling, session.Policy, options);
            var first = response.Outputs.Single();
            await EmitAsync(_outputs[0], [first.TokenId], first.Text, first.Logprob is { } lp ? [lp] : []);
            logged.Add(first.TokenId);
            if (first.Finished) return first.FinishReason;
            return await DecodeAsync(_outputs[0], response.Kv, session.Prompt, logged, session.Sampling, options);
        }
        return await DecodeAsync(_outputs[0], LatestKv(_kvSession), session.Prompt, logged, session.Sampling, options, holder: holder);
    });

    private void Started()
    {
        _metrics.QueueTime.Record(Stopwatch.GetElapsedTime(_arrival).TotalSeconds);
        _metrics.Waiting.Add(-1);
        _waiting = false;
    }

    /// <summary>What both paths share: the live-request registration (Abort), cancellation, errors and metrics.</summary>
    private async Task StreamAsync(Func<CallOptions, CancellationTokenSource, Task<LlmCluster.V1.FinishReason>> body)
    {
        _metrics.Waiting.Add(1);
        _waiting = true;
        _metrics.Running.Add(1);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        try
        {
            var finish = await body(new CallOptions(deadline: context.Deadline, cancellationToken: cts.Token), cts);
            await CompleteAsync(finish);
        }
        catch (Exception e) when (cts.IsCancellationRequested && (e is OperationCanceledException || e is RpcException { StatusCode: StatusCode.Cancelled }))
        {
            if (context.CancellationToken.IsCancellationRequested)
            {
                // The client went away: decode stops, the log stays open, and Resume can continue it.
                await MarkAsync(SessionStatus.Aborted, finish: null);
            }
            else
            {
                // Abort: the output ends here, and the client is told so.
                await CompleteAsync(LlmCluster.V1.FinishReason.Abort);
            }
        }
        catch (RpcException e)
        {
            _metrics.Errors.Add(1, new KeyValuePair<string, object?>("code", e.StatusCode.ToString()));
            await MarkAsync(SessionStatus.Failed, finish: null);
            throw;
        }
        catch (Exception e) when (Serving.Hosting.StatusMapping.IsUnreachable(e))
        {
            // The token log cannot be written, so no token may be sent: fail clearly rather than stream unlogged.
            _metrics.Errors.Add(1, new KeyValuePair<string, object?>("code", StatusCode.Unavailable.ToString()));
            throw new RpcException(new Status(StatusCode.Unavailable, $"session store unavailable: {e.Message}"));
        }
        finally
        {
            if (_waiting) _metrics.Waiting.Add(-1);
            _metrics.Running.Add(-1);
            if (_sessionId.Length > 0) gateway.Live.TryRemove(new KeyValuePair<string, CancellationTokenSource>(_sessionId, cts));
        }
    }

    private (int[] Prompt, Engine.Sampling.SamplingParameters P, SamplingParams Wire, string Policy) Validate(GenerateRequest request, bool addBos)
    {
        var host = gateway.Host;
        int[] prompt = request.PromptCase switch
        {
            GenerateRequest.PromptOneofCase.Text when request.Text.Length > 0 => host.Tokenizer.Encode(request.Text, addBos),
            GenerateRequest.PromptOneofCase.TokenIds when request.TokenIds.Ids.Count > 0 => request.TokenIds.Ids.ToArray(),
            GenerateRequest.PromptOneofCase.Chat when request.Chat.Messages.Count > 0 => ChatPrompts.Encode(host.Tokenizer, request.Chat, continuing: !addBos, gateway.ChatTemplate),
            _ => throw new RpcException(new Status(StatusCode.InvalidArgument, "prompt is empty: set text, token_ids or chat messages")),
        };
        RequestChecks.Prompt(prompt, host.Config);
        var p = SamplingMapping.ToEngine(request.Sampling, host.Config.VocabSize);
        p = p.WithResolvedSeed(); // fixed here so that every worker, and a restarted one, draws the same tokens
        var policy = PolicyMapping.ToSpec(request.KvPolicy) ?? gateway.Options.Policy;
        if (p.IsBeamSearch)
        {
            // Beams are copies of one cache, compared every step: the engine's search keeps the KV dense.
            // The server's default policy does not apply to them; an explicit other one is refused.
            if (PolicyMapping.ToSpec(request.KvPolicy) is { } asked && asked != "dense")
                throw new InvalidRequestException($"kv_policy must be dense with beam search (num_beams > 1), got {asked}");
            policy = "dense";
        }
        PolicyMapping.Parse(policy, host.Policies);
        return (prompt, p, SamplingMapping.WithSeed(request.Sampling, p.Seed!.Value), policy);
    }

    /// <summary>
    /// Streams the rest of the output from a decode worker. If the worker dies mid-stream, decode
    /// restarts on another one from the latest KV in the cache manager with every token already sent:
    /// the new worker replays them (sampling step i still draws with (seed, i)) and runs the ones the
    /// checkpoint lacks, so the client sees each token exactly once and the same tokens as without
    /// the failure.
    /// </summary>
    /// <param name="startTurn">The KV holds only the conversation's history: the worker runs the turn's
    /// fed tokens (<paramref name="prompt"/>) and samples its first token (until one has come).</param>
    /// <param name="holder">"host:port" of the decode worker that holds the KV, preferred when healthy.</param>
    internal async Task<LlmCluster.V1.FinishReason> DecodeAsync(RelayedOutput output, KvHandle kv, int[] prompt, List<int> generated, SamplingParams sampling, CallOptions options,
        bool startTurn = false, string? holder = null)
    {
        const int maxRestarts = 2;
        Uri? failed = null;
        for (int attempt = 0; ; attempt++)
        {
            using var lease = gateway.Decode.Acquire(except: failed, prefer: holder);
            if (startTurn && attempt == 0)
                _metrics.TurnRoutes.Add(1, new KeyValuePair<string, object?>("route", lease.Worker.Address.Authority == holder ? "decode_holder" : "decode_other"));
            await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate { DecodeWorker = lease.Worker.Address.Authority }, options.CancellationToken);
            try
            {
                return await DecodeOnAsync(lease, output, kv, prompt, generated, sampling, options, startTurn && generated.Count == 0);
            }
            catch (RpcException e) when (attempt < maxRestarts && IsWorkerLoss(e) && !options.CancellationToken.IsCancellationRequested)
            {
                WorkerPool.ReportFailure(lease.Worker, new RpcException(new Status(StatusCode.Unavailable, e.Message)));
                failed = lease.Worker.Address;
                // One of several outputs restarts from its own checkpoints, or, before its first one, from the prompt's KV.
                if (_outputs.Count == 1 && !output.Held) kv = LatestKv(_kvSession);
                else if (output.Checkpointed) kv = LatestKv(CheckpointSession(output));
                gateway.Logger.LogDecodeRestart(_sessionId, lease.Worker.Address.Authority, generated.Count, e.Message);
            }
        }
    }

    /// <summary>The newest KV (version 0) under <paramref name="kvSession"/>, with the session's policy so that a worker can rebuild it.</summary>
    private KvHandle LatestKv(string kvSession) => new() { SessionId = kvSession, Policy = PolicyMapping.ToWire(_policy) };

    /// <summary>Where an output's checkpoints go: the session's KV for a single output, its own id with several.</summary>
    private string CheckpointSession(RelayedOutput output) => _outputs.Count == 1 && !output.Held ? "" : SessionRecord.OutputId(_kvSession, output.Index);

    internal bool IsSingleOutput(RelayedOutput output) => _outputs.Count == 1 && !output.Held;

    /// <summary>A failure of the worker or the connection to it, as opposed to a verdict on the request.</summary>
    internal static bool IsWorkerLoss(RpcException e) =>
        e.StatusCode is StatusCode.Unavailable or StatusCode.Internal or StatusCode.Unknown or StatusCode.Aborted or StatusCode.Cancelled;

    private async Task<LlmCluster.V1.FinishReason> DecodeOnAsync(WorkerLease lease, RelayedOutput output, KvHandle kv, int[] prompt, List<int> generated, SamplingParams sampling, CallOptions options, bool startTurn)
    {
        var finish = LlmCluster.V1.FinishReason.Unspecified;
        bool single = IsSingleOutput(output);
        using var call = new LlmCluster.V1.Decode.DecodeClient(lease.Worker.Channel).Decode(new DecodeRequest
        {
            Kv = kv,
            Sampling = sampling,
            PromptTokenIds = { prompt },
            GeneratedTokenIds = { generated },
            CacheManager = gateway.Options.CacheManager,
            HistoryTokenCount = _history,
            History = _recipe,
            OutputIndex = output.Index,
            CheckpointSessionId = CheckpointSession(output),
            StartTurn = startTurn,
        }, options);
        await foreach (var r in call.ResponseStream.ReadAllAsync(options.CancellationToken))
        {
            switch (r.ResponseCase)
            {
                case DecodeResponse.ResponseOneofCase.Chunk:
                    generated.AddRange(r.Chunk.TokenIds);
                    await EmitAsync(output, r.Chunk.TokenIds, r.Chunk.Text, r.Chunk.Logprobs);
                    break;
                case DecodeResponse.ResponseOneofCase.Checkpoint when !single:
                    output.Checkpointed = true; // the session's record describes a single output's checkpoint only
                    break;
                case DecodeResponse.ResponseOneofCase.Checkpoint:
                    await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate
                    {
                        CheckpointId = r.Checkpoint.Version.ToString(),
                        CheckpointTokenIndex = r.Checkpoint.TokenCount - _history - prompt.Length,
                    }, CancellationToken.None);
                    break;
                case DecodeResponse.ResponseOneofCase.Complete:
                    finish = r.Complete.FinishReason;
                    break;
            }
        }
        return finish == LlmCluster.V1.FinishReason.Unspecified
            ? throw new RpcException(new Status(StatusCode.Unavailable, "decode worker ended the stream without a completion"))
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
                ? new RpcException(new Status(StatusCode.Unavailable, $"{lease.Worker.Address.Authority} unavailable: {e.Message}", e.Status.DebugException))
                : e;
        }
    }

    /// <summary>Logs the tokens in the output's log, then sends them (a resumed client must never miss a
    /// sent token). An output that is final only at the end keeps them instead.</summary>
    internal async Task EmitAsync(RelayedOutput output, IReadOnlyList<int> ids, string text, IEnumerable<LlmCluster.V1.TokenLogprob> logprobs)
    {
        if (output.Held)
        {
            output.Hold(ids, text, logprobs);
            return;
        }
        if (_beforeFirstToken is { } beforeFirst)
        {
            _beforeFirstToken = null;
            await beforeFirst();
        }
        int offset = output.Generated;
        for (int i = 0; i < ids.Count; i++)
            await gateway.Sessions.TryAppendTokenAsync(output.LogId, new TokenEntry(offset + i, ids[i], i == ids.Count - 1 ? text : ""), CancellationToken.None);
        var chunk = new Chunk { Index = output.Index, TokenIds = { ids }, Text = text, TokenOffset = offset };
        chunk.Logprobs.Add(logprobs);
        await _write.WaitAsync(CancellationToken.None);
        try
        {
            await responses.WriteAsync(new GenerateResponse { Chunk = chunk });
            output.Generated += ids.Count;
            var now = Stopwatch.GetElapsedTime(_arrival);
            if (ids.Count > 0)
            {
                _generated += ids.Count;
                if (_firstToken is null)
                {
                    _firstToken = now;
                    _generatedAtFirst = _generated;
                    _metrics.TimeToFirstToken.Record(now.TotalSeconds);
                }
                else if (_lastToken is { } last)
                {
                    _metrics.InterTokenLatency.Record((now - last).TotalSeconds);
                }
                _lastToken = now;
                _metrics.GenerationTokens.Add(ids.Count);
            }
        }
        finally
        {
            _write.Release();
        }
    }

    /// <summary>Ends one of several outputs as soon as it finishes: its log is completed, then its
    /// Complete is sent (the others go on).</summary>
    internal async Task CompleteOutputAsync(RelayedOutput output, LlmCluster.V1.FinishReason finish)
    {
        output.Completed = true;
        await gateway.Sessions.CompleteTokenLogAsync(output.LogId, ReasonName(finish), CancellationToken.None);
        await _write.WaitAsync(CancellationToken.None);
        try
        {
            await responses.WriteAsync(new GenerateResponse { Complete = Completion(output, finish) });
        }
        finally
        {
            _write.Release();
        }
    }

    /// <summary>The end of the request: every output not yet ended ends with <paramref name="finish"/>
    /// (a single output always ends here), then the session is marked.</summary>
    private async Task CompleteAsync(LlmCluster.V1.FinishReason finish)
    {
        var reason = ReasonName(finish);
        var open = _outputs.Where(o => !o.Completed).ToList();
        foreach (var o in open) await gateway.Sessions.CompleteTokenLogAsync(o.LogId, reason, CancellationToken.None);
        if (!_outputs.Any(o => o.LogId == _sessionId))
            await gateway.Sessions.CompleteTokenLogAsync(_sessionId, reason, CancellationToken.None); // the record's finish reason
        await gateway.Sessions.UpdateAsync(_sessionId, new SessionUpdate
        {
            Status = finish == LlmCluster.V1.FinishReason.Abort ? SessionStatus.Aborted : SessionStatus.Finished,
            GeneratedTokens = _generated,
        }, CancellationToken.None);
        var e2e = Stopwatch.GetElapsedTime(_arrival);
        _metrics.EndToEnd.Record(e2e.TotalSeconds);
        if (Tpot() is { } tpot) _metrics.TimePerOutputToken.Record(tpot);
        _metrics.Success.Add(1, new KeyValuePair<string, object?>("finished_reason", reason));
        foreach (var o in open)
        {
            o.Completed = true;
            await WriteAsync(new GenerateResponse { Complete = Completion(o, finish) });
        }
    }

    private static string ReasonName(LlmCluster.V1.FinishReason finish) => finish.ToString().ToLowerInvariant().Replace("finishreason", "");

    /// <summary>Time per output token between the first and the last token the client got (as vLLM and
    /// TGI count it), over this call's tokens: the final checkpoint and the completion after the last
    /// token are e2e, not TPOT, and a resume's earlier tokens are not this call's.</summary>
    private double? Tpot() =>
        _generated - _generatedAtFirst is > 0 and var after && _firstToken is { } first && _lastToken is { } last ? (last - first).TotalSeconds / after : null;

    private Complete Completion(RelayedOutput output, LlmCluster.V1.FinishReason finish)
    {
        var e2e = Stopwatch.GetElapsedTime(_arrival);
        return new Complete
        {
            Index = output.Index,
            FinishReason = finish,
            Usage = new Usage { PromptTokens = _promptTokens, CompletionTokens = output.Generated },
            Timings = new Timings { TtftSeconds = _firstToken?.TotalSeconds ?? 0, TpotSeconds = Tpot() ?? 0, E2ESeconds = e2e.TotalSeconds },
        };
    }

    /// <summary>Writes to the client; several outputs' streams share the one writer.</summary>
    private async Task WriteAsync(GenerateResponse response)
    {
        await _write.WaitAsync(CancellationToken.None);
        try
        {
            await responses.WriteAsync(response);
        }
        finally
        {
            _write.Release();
        }
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
