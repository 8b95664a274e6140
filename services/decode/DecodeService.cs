using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
using Cluster.Engine.Scheduling;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using LlmCluster.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Cluster.Decode;

/// <summary>
/// Continues sequences from their KV in the cache manager: each Decode call pulls the blocks, replays
/// the tokens already streamed, joins the continuous batch (<see cref="ContinuousBatcher"/>) and
/// streams tokens; the KV is checkpointed to the cache manager every N tokens and at the end, so a
/// stream can be restarted elsewhere. A call that is cancelled leaves the batch before the next step.
/// </summary>
public sealed partial class DecodeService : LlmCluster.V1.Decode.DecodeBase, IClusterService
{
    public const string MeterName = "LlmCluster.Decode";
    private readonly ModelHost _host;
    private readonly ServiceOptions _options;
    private readonly ContinuousBatcher _batcher;
    private readonly ChannelCache _channels = new();
    private readonly DecodeMetrics _metrics;
    private readonly ConcurrentDictionary<DecodeCall, byte> _calls = new();
    private readonly ILogger _logger;

    private DecodeService(ModelHost host, ServiceOptions options, ILogger logger)
    {
        _host = host;
        _options = options;
        _logger = logger;
        Admission = KvAdmission.ForBudget((long)options.KvMemoryMb << 20, host.Config, options.MaxQueue, maxSequences: Math.Min(options.MaxBatch, host.Model!.MaxChunk), headroom: 1);
        Resident = new ResidentKv((long)options.ResidentKvMb << 20, TimeSpan.FromMinutes(10)); // idle longer, a conversation fetches from the cache manager
        // Kept caches live inside the KV budget and make room whenever a request needs it.
        Admission.Reclaim = bytes => Resident.Reclaim(bytes);
        Prefetches = new KvPrefetches(Resident, tokens => Admission.TryAcquire(tokens));
        _metrics = new DecodeMetrics(() => _batcher!.Running, 4 * host.Config.ParameterCount, Admission, Resident);
        _batcher = new ContinuousBatcher(host.Model!, Math.Min(options.MaxBatch, host.Model!.MaxChunk),
            afterStep: (size, elapsed) =>
            {
                _metrics.BatchSize.Record(size);
                _metrics.StepSeconds.Record(elapsed.TotalSeconds);
                _metrics.Tokens.Add(size);
            },
            afterToken: (seq, chunk, state) => ((DecodeCall)state!).AfterToken(seq, chunk),
            preempted: state => ((DecodeCall)state!).Preempted());
    }

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging)
    {
        var logger = logging.CreateLogger("decode");
        NativeHeap.MapFromOnePage(); // paged KV caches are reallocated block by block (NativeHeap says why)
        return Task.FromResult<IClusterService>(new DecodeService(ModelHost.Load(options, logger, weights: true), options, logger));
    }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName, KvTransferMetrics.MeterName];

    /// <summary>Sequences whose KV this worker rebuilt from the prompt (tests read it: in a test process
    /// several services share meter names, so the metric alone cannot say which worker counted).</summary>
    public long KvRebuilds => Interlocked.Read(ref _kvRebuilds);

    private long _kvRebuilds;

    /// <summary>The KV block pool, its queue and its preemptions (tests read its peak).</summary>
    public KvAdmission Admission { get; }

    /// <summary>Finished conversations' caches kept for their next turn (KV-aware routing).</summary>
    public ResidentKv Resident { get; }

    /// <summary>Later turns that started from a kept cache, with no transfer (tests read it).</summary>
    public long ResidentHits => Interlocked.Read(ref _residentHits);

    private long _residentHits;

    /// <summary>Prompts' KV fetched while prefill still ran (Decode.PrefetchKv).</summary>
    public KvPrefetches Prefetches { get; }

    /// <summary>Decode calls that started from a prefetched KV, with no transfer of their own (tests read it).</summary>
    public long PrefetchHits => Interlocked.Read(ref _prefetchHits);

    private long _prefetchHits;

    /// <summary>Sequences in the batch (tests read it to see that an abort freed its sequence).</summary>
    public int Running => _batcher.Running;

    public void MapGrpcServices(IEndpointRouteBuilder endpoints) => endpoints.MapGrpcService<DecodeService>();

    /// <summary>Starts fetching a prompt's KV while it is being prefilled (<see cref="KvPrefetches"/>).</summary>
    public override Task<PrefetchKvResponse> PrefetchKv(PrefetchKvRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "session_id is required"));
        if (request.TokenCount < 1 || request.TokenCount > _host.Config.MaxPositions)
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"token_count must be between 1 and the model's context ({_host.Config.MaxPositions}), got {request.TokenCount}"));
        var cacheManager = _channels.Get(string.IsNullOrEmpty(request.CacheManager) ? _options.CacheManager : request.CacheManager);
        bool started = Prefetches.Start(request.SessionId, (state, ct) => PrefetchAsync(cacheManager, request.SessionId, request.TokenCount, state, ct));
        if (started) _metrics.Prefetches.Add(1, new KeyValuePair<string, object?>("outcome", "started"));
        return Task.FromResult(new PrefetchKvResponse { Started = started });
    }

    /// <summary>
    /// The prompt's KV as soon as the prefill worker's put is announced (a get then follows the put's
    /// layers as they land), restored as <see cref="LoadOrRebuildAsync"/> restores it. Until the put is
    /// announced the cache manager answers NOT_FOUND: asked again, a little later each time (2 ms doubling to
    /// 200 ms; the Decode call's arrival cuts a wait short). Null when a
    /// version of another size is stored, or the Decode call has come and nothing is announced.
    /// </summary>
    private async Task<PrefetchedKv?> PrefetchAsync(GrpcChannel cacheManager, string session, int tokens, KvPrefetches.State state, CancellationToken ct)
    {
        var delay = TimeSpan.FromMilliseconds(2);
        long start = Stopwatch.GetTimestamp();
        bool lastTry = false;
        while (true)
        {
            // Each layer goes into the cache as it lands, while prefill computes the next ones.
            KvRestore.LayerByLayer? restore = null;
            try
            {
                // Each block is restored and digested (the base of the first checkpoint) as it lands, then dropped.
                var digests = new List<KvDigest.Layer>();
                var (handle, _, _) = await KvTransfer.GetAsync(cacheManager, session, 0, ct, tokens, onBlock: (h, block) =>
                {
                    if (h.TokenCount != tokens) return;
                    var layer = (restore ??= new KvRestore.LayerByLayer(_host.Model!, PolicyOf(h).Policy, RoomToBlockEnd(h.TokenCount))).Add(h, block);
                    digests.Add(KvDigest.Of(block, h.Layout.HeadDim, layer));
                });
                return handle.TokenCount == tokens && restore is not null ? new PrefetchedKv(handle, KvDigest.Of(digests), restore.Finish(handle)) : null;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound && !lastTry && Stopwatch.GetElapsedTime(start) < PendingPuts.Expiry)
            {
            }
            finally
            {
                restore?.Dispose(); // a cache it did not hand out
            }
            // Once the Decode call has come, prefill has announced its put if it will: one more try settles it.
            lastTry = state.Claimed;
            await state.BeforeAskingAgainAsync(delay, ct);
            // At most 5 asks a second: a request queued at a busy prefill worker may wait long for its pass,
            // and a put announced meanwhile is caught up on quickly (its landed layers wait at the cache manager).
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 200));
        }
    }

    /// <summary>The policy a fetched KV was stored under, which manages its cache here.</summary>
    private (Engine.Compression.KvCompressionPolicy Policy, string Spec) PolicyOf(KvHandle handle)
    {
        var spec = PolicyMapping.ToSpec(handle.Policy) ?? "dense";
        return (PolicyMapping.Parse(spec, _host.Policies), spec);
    }

    /// <summary>Room a restored cache gets up to the end of its last block (what its lease holds): the batch
    /// sizes a paged cache to its blocks as it grows, and one already that size is not copied again before its first step.</summary>
    private int RoomToBlockEnd(int tokens) => (tokens / Admission.BlockSize + 1) * Admission.BlockSize - tokens;

    public override async Task Decode(DecodeRequest request, IServerStreamWriter<DecodeResponse> responses, ServerCallContext context)
    {
        var model = _host.Model!;
        var c = model.Config;
        if (request.Kv is null || string.IsNullOrEmpty(request.Kv.SessionId)) throw new RpcException(new Status(StatusCode.InvalidArgument, "kv.session_id is required"));
        if (request.Sampling is null || !request.Sampling.HasSeed) throw new RpcException(new Status(StatusCode.InvalidArgument, "sampling.seed is required (the gateway fixes it so that every worker draws the same tokens)"));
        var p = SamplingMapping.ToEngine(request.Sampling, c.VocabSize);
        if (p.IsBeamSearch)
        {
            await BeamSearchAsync(request, p, responses, context);
            return;
        }
        var prompt = request.PromptTokenIds.ToArray();
        var generated = request.GeneratedTokenIds.ToArray();
        RequestChecks.Prompt(prompt, c, "prompt_token_ids");
        int history = request.HistoryTokenCount; // earlier turns of a conversation, before this turn's prompt
        if (history < 0) throw new RpcException(new Status(StatusCode.InvalidArgument, $"history_token_count must be >= 0, got {history}"));
        if (request.StartTurn)
        {
            if (history == 0) throw new InvalidRequestException("start_turn needs history_token_count > 0: only a conversation's later turn starts on a decode worker");
            if (generated.Length > 0) throw new InvalidRequestException("generated_token_ids must be empty with start_turn: the worker samples the turn's first token");
            if (!string.IsNullOrEmpty(request.CheckpointSessionId)) throw new InvalidRequestException("checkpoint_session_id must be empty with start_turn: a conversation's turn has one output");
        }
        else if (generated.Length == 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "generated_token_ids is empty: decode continues after the first token from prefill (or set start_turn)"));
        }

        var cacheManager = _channels.Get(string.IsNullOrEmpty(request.CacheManager) ? _options.CacheManager : request.CacheManager);
        // Blocks for the tokens the cache will hold (not for max_tokens: the batch takes more as the
        // sequence grows, preempting when the pool is full), before any of it is loaded; waits in line (or
        // is refused) when full.
        long queued = Stopwatch.GetTimestamp();
        using var lease = await Admission.AcquireAsync(HeldTokens(request, history + prompt.Length + generated.Length), context.CancellationToken);
        _metrics.QueueWaitSeconds.Record(Stopwatch.GetElapsedTime(queued).TotalSeconds);
        // Without a version (a restart), the newest KV that lacks at least the newest streamed token.
        int maxTokens = request.Kv.Version == 0 ? history + prompt.Length + Math.Max(0, generated.Length - 1) : 0;
        var (handle, cache, policy, spec, loaded) = request.StartTurn
            ? await HistoryAsync(request, cacheManager, history, maxNewTokens: 1, context.CancellationToken) // room for the turn comes from the pool
            : await LoadOrRebuildAsync(request, cacheManager, prompt, history, maxTokens, p.MaxTokens, context.CancellationToken);
        var seq = new SequenceGeneration(c, p, _host.Tokenizer, prompt, cache, request.OutputIndex, ownsCache: false);
        // After a preemption the batch rebuilds the cache as it was before the first generated token (the
        // prompt's KV as prefill stored it, or the conversation's from its recipe) and feeds the generated
        // tokens again. Without a recipe for the history it cannot, and the sequence is never preempted.
        Func<SequenceKvCache>? recompute = history == 0 || request.History is not null
            ? () => KvRebuild.ForTurn(model, request.History, history, prompt, policy, p.MaxTokens)
            : null;
        var keep = new StrongBox<bool>();
        try
        {
            if (history > 0 && handle.TokenCount == history)
            {
                // The KV holds the history only (this turn starts here, or restarts before its prompt's KV
                // was stored): run the turn's fed tokens as prefill does, on the batch thread.
                await _batcher.RunExclusiveAsync(() => { ConversationTurn.Feed(model, cache, prompt, p.MaxTokens, seq.Logits); return true; }, context.CancellationToken);
                handle = new KvHandle(handle) { TokenCount = history + prompt.Length };
                loaded = null; // the cache moved past the loaded version: the first checkpoint is whole
            }
            await StreamAsync(request, p, seq, handle, policy, spec, loaded, cacheManager, prompt, generated, history, lease, recompute, responses, context, keep);
        }
        finally
        {
            var final = seq.Cache; // a preemption replaced the cache it started with (and freed that one)
            seq.Dispose();
            lease.Dispose(); // first: a request waiting for room goes before a kept cache
            // A single output stays on this worker for its conversation's next turn (finished) or its resume
            // (its client went away), in the room left in the KV pool (given back as soon as a request needs it).
            if (!keep.Value || Admission.TryAcquire(final.Capacity) is not { } room || !Resident.Keep(handle.SessionId, final, room)) final.Dispose();
        }
    }

    /// <summary>Streams one sequence through the continuous batch. Sets <paramref name="keep"/> when it
    /// ended as a single output whose cache is whole (finished, or stopped between two steps because its
    /// client went away; not failed), so that it may stay for the next turn or the stream's resume.</summary>
    private async Task StreamAsync(DecodeRequest request, Engine.Sampling.SamplingParameters p, SequenceGeneration seq, KvHandle handle,
        Engine.Compression.KvCompressionPolicy policy, string spec, KvDigest? loaded, GrpcChannel cacheManager, int[] prompt, int[] generated, int history,
        KvAdmission.KvLease lease, Func<SequenceKvCache>? recompute, IServerStreamWriter<DecodeResponse> responses, ServerCallContext context, StrongBox<bool> keep)
    {
        var cache = seq.Cache;
        int cached = handle.TokenCount - history - prompt.Length;
        // The cache must lack at least the newest token: its logits come from running it (a compressed
        // cache cannot be rolled back to recompute them). Starting a turn, it lacks none: the fed tokens ran.
        if (request.StartTurn ? cached != 0 : cached < 0 || cached >= generated.Length)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the KV holds {handle.TokenCount} tokens; expected the history's {history} and the prompt's {prompt.Length} plus fewer than the {generated.Length} generated"));
        int evictedBefore = cache.TokensSeen - cache.Length; // by the cache manager's policy, before this worker

        Engine.Sampling.FinishReason? ended = null;
        for (int i = 0; i < generated.Length; i++)
        {
            if (ended is not null) throw new InvalidRequestException($"generated_token_ids go on past index {i - 1}, where the output ended ({ended})");
            ended = seq.Replay(generated[i]);
        }
        if (ended is { } done)
        {
            // Every token was streamed before the previous worker could say so (it died between its last
            // token and its completion): the output is complete, and sampling one more would add a token.
            await responses.WriteAsync(new DecodeResponse { Complete = new DecodeComplete { FinishReason = SamplingMapping.ToWire(done) } });
            return;
        }
        int every = request.CheckpointEvery > 0 ? request.CheckpointEvery : _options.CheckpointEvery;
        // Outputs of one request (n > 1) continue the same prompt KV but checkpoint apart.
        var checkpointSession = string.IsNullOrEmpty(request.CheckpointSessionId) ? handle.SessionId : request.CheckpointSessionId;
        var call = new DecodeCall(this, cacheManager, handle, checkpointSession, every, generated.Length, context.CancellationToken);
        // The version it loaded is the first delta's base when its checkpoints go to the same session in
        // the same dtype (n > 1 outputs checkpoint to sessions of their own: their first is whole).
        if (loaded is not null && handle.Version > 0 && checkpointSession == handle.SessionId && KvLayoutMapping.Precision(handle.Layout) == _options.KvPrecision)
            call.SetBase(loaded, handle.Version, handle.TokenCount);
        _calls[call] = 0;
        var finished = Engine.Sampling.FinishReason.Abort;
        // Leaving early (a write to a client that is gone throws) must not free the cache while a batched
        // step still runs on it: the sequence is cancelled and the batch's release of it awaited first.
        using var leave = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        ChannelReader<GenerationChunk>? reader = null;
        try
        {
            // The tokens the cache lacks (at least the newest one) run when the sequence joins the batch.
            reader = _batcher.Add(seq, generated[cached..], leave.Token, call, lease, recompute);
            var started = Stopwatch.StartNew();
            int produced = 0;
            var lastToken = TimeSpan.Zero;
            await foreach (var chunk in reader.ReadAllAsync(CancellationToken.None))
            {
                await call.FlushCheckpoints(responses);
                if (chunk.TokenId is int id)
                {
                    var dc = new DecodeChunk { TokenIds = { id }, OutputIndex = generated.Length + produced, Text = chunk.Text };
                    if (SamplingMapping.ToWire(chunk.Logprobs) is { } lp) dc.Logprobs.Add(lp);
                    await responses.WriteAsync(new DecodeResponse { Chunk = dc });
                    produced++;
                    lastToken = started.Elapsed;
                    call.Written(generated.Length + produced);
                }
                else if (chunk.Text.Length > 0)
                {
                    await responses.WriteAsync(new DecodeResponse { Chunk = new DecodeChunk { OutputIndex = generated.Length + produced, Text = chunk.Text } });
                }
                if (chunk.Finish is { } finish)
                {
                    finished = finish;
                    // The final checkpoint is announced, not awaited: a reader of the session (the next
                    // turn's prefill, a restart) waits at the cache manager until it lands, and the
                    // stream completes now (issue 17: a client's stream never waits for a checkpoint).
                    if (finish != Engine.Sampling.FinishReason.Abort) await call.ReserveFinalAsync();
                    await call.FlushCheckpoints(responses);
                    await responses.WriteAsync(new DecodeResponse
                    {
                        Complete = new DecodeComplete
                        {
                            FinishReason = SamplingMapping.ToWire(finish),
                            GeneratedTokens = produced,
                            // Up to the last token: announcing the final checkpoint is not a token's time.
                            TpotSeconds = produced > 1 ? lastToken.TotalSeconds / produced : 0,
                        },
                    });
                }
            }
            context.CancellationToken.ThrowIfCancellationRequested();
        }
        finally
        {
            if (reader is not null)
            {
                leave.Cancel();
                // A preempted sequence's cache is gone, and one caught mid-recomputation lacks tokens: only a
                // cache that holds every token but the newest may stay.
                keep.Value = await ReleasedAsync(reader) && checkpointSession == handle.SessionId
                    && !seq.Cache.IsDisposed && seq.Cache.TokensSeen == history + prompt.Length + seq.Generated.Count - 1;
            }
            _calls.TryRemove(call, out _);
            // llm_kv_evictions_total: the tokens this worker's policy dropped from the sequence's cache.
            if (policy.Budget is not null) _metrics.Evictions.Add(seq.Cache.TokensSeen - seq.Cache.Length - evictedBefore, new KeyValuePair<string, object?>("policy", spec.Split('(')[0]));
        }
    }

    /// <summary>Waits until the batch has let go of a sequence: it completes the sequence's channel once
    /// the sequence has left the batch (finished, failed or cancelled), never in the middle of a step.
    /// False when it ended with an error (its cache may be half-written).</summary>
    private static async Task<bool> ReleasedAsync(ChannelReader<GenerationChunk> reader)
    {
        try
        {
            while (await reader.WaitToReadAsync(CancellationToken.None))
                while (reader.TryRead(out _)) { }
            return true;
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>
    /// The conversation's history for a turn that starts on this worker: the cache this worker kept when
    /// the previous turn ended here (no transfer), else the cache manager's copy, else rebuilt from the
    /// recipe on the batch thread (<see cref="HistoryKv"/>, as a prefill worker would).
    /// </summary>
    private async Task<(KvHandle Handle, SequenceKvCache Cache, Engine.Compression.KvCompressionPolicy Policy, string Spec, KvDigest? Loaded)> HistoryAsync(
        DecodeRequest request, GrpcChannel cacheManager, int history, int maxNewTokens, CancellationToken ct)
    {
        var model = _host.Model!;
        var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
        var policy = PolicyMapping.Parse(spec, _host.Policies);
        var handle = new KvHandle { SessionId = request.Kv.SessionId, Layout = KvLayoutMapping.For(model), Policy = request.Kv.Policy, TokenCount = history };
        if (Resident.TryTake(request.Kv.SessionId, history) is { } kept)
        {
            Interlocked.Increment(ref _residentHits);
            _metrics.ResidentHits.Add(1);
            return (handle, kept, policy, spec, null);
        }
        var fetched = await HistoryKv.FetchAsync(model, cacheManager, request.Kv.SessionId, history, request.Kv.Version, request.History, policy, maxNewTokens, ct);
        if (fetched.Cache is { } cache) return (handle, cache, policy, spec, null);
        var reason = fetched.RebuildReason!;
        _logger.LogWarning("KV of session {Session} not in the cache manager ({Reason}); rebuilding its history", request.Kv.SessionId, reason);
        Interlocked.Increment(ref _kvRebuilds);
        _metrics.Rebuilds.Add(1, new KeyValuePair<string, object?>("reason", reason));
        return (handle, await _batcher.RunExclusiveAsync(() => HistoryKv.Rebuild(model, request.History, policy, history, maxNewTokens), ct), policy, spec, null);
    }

    /// <summary>Slots the sequence's cache takes when it joins the batch: the tokens it has (earlier turns,
    /// the prompt, the output so far, the newest included), or its policy's budget if smaller.</summary>
    private int HeldTokens(DecodeRequest request, int tokensSoFar) => Math.Min(tokensSoFar, PolicyBudget(request) ?? int.MaxValue);

    /// <summary>The most slots a beam's cache can take: the prompt plus max_tokens, or the policy's budget
    /// or the context, whichever is smaller.</summary>
    private int WorstCaseTokens(DecodeRequest request, int tokensSoFar, int maxTokens) =>
        (int)Math.Min((long)tokensSoFar + maxTokens + 1, (PolicyBudget(request) ?? _host.Config.MaxPositions) + 1L);

    private int? PolicyBudget(DecodeRequest request)
    {
        var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
        return PolicyMapping.Parse(spec, _host.Policies).Budget;
    }

    /// <summary>
    /// The sequence's KV from the cache manager; when the cache manager has lost it (NOT_FOUND) or cannot
    /// be reached (UNAVAILABLE), the KV prefill stored, rebuilt from the prompt (<see cref="KvRebuild"/>):
    /// a restart of the cache manager costs recomputation, never the stream. A conversation's later turn
    /// (history &gt; 0) is rebuilt from the request's recipe of the earlier turns, then this turn's fed tokens.
    /// </summary>
    private async Task<(KvHandle Handle, SequenceKvCache Cache, Engine.Compression.KvCompressionPolicy Policy, string Spec, KvDigest? Loaded)> LoadOrRebuildAsync(
        DecodeRequest request, GrpcChannel cacheManager, int[] prompt, int history, int maxTokens, int maxNewTokens, CancellationToken ct)
    {
        var model = _host.Model!;
        var c = model.Config;
        // The prompt's KV this worker fetched while prefill ran (the gateway's PrefetchKv), if it did.
        if (request.Kv.Version == 0 && await Prefetches.ClaimAsync(request.Kv.SessionId, ct) is { } pre)
        {
            if (pre.Handle.TokenCount == maxTokens)
            {
                Interlocked.Increment(ref _prefetchHits);
                _metrics.Prefetches.Add(1, new KeyValuePair<string, object?>("outcome", "used"));
                var (prePolicy, preSpec) = PolicyOf(pre.Handle);
                return (pre.Handle, pre.Cache, prePolicy, preSpec, pre.Loaded);
            }
            pre.Cache.Dispose();
        }
        // A stream that stopped here (its client or gateway went away) and is resumed here: its cache,
        // cut back to what the client has seen, with no transfer (KV-aware routing of a resume).
        if (request.Kv.Version == 0 && maxTokens > 0 && Resident.TryTake(request.Kv.SessionId, history + prompt.Length, maxTokens) is { } kept)
        {
            Interlocked.Increment(ref _residentHits);
            _metrics.ResidentHits.Add(1);
            var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
            var handle = new KvHandle { SessionId = request.Kv.SessionId, Layout = KvLayoutMapping.For(model), Policy = request.Kv.Policy, TokenCount = kept.TokensSeen };
            return (handle, kept, kept.Policy, spec, null);
        }
        try
        {
            var (handle, blocks, _) = await KvTransfer.GetAsync(cacheManager, request.Kv.SessionId, request.Kv.Version, ct, maxTokens);
            var (policy, spec) = PolicyOf(handle);
            return (handle, KvRestore.ToCache(model, handle, blocks, policy, maxNewTokens: RoomToBlockEnd(handle.TokenCount)), policy, spec, KvDigest.Of(blocks, c.HeadDim));
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && (history == 0 || request.History is not null)
            && request.Kv.Policy is not null && !ct.IsCancellationRequested)
        {
            var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
            var policy = PolicyMapping.Parse(spec, _host.Policies);
            _logger.LogWarning("KV of session {Session} not in the cache manager ({Code}); rebuilding it from the prompt", request.Kv.SessionId, e.StatusCode);
            Interlocked.Increment(ref _kvRebuilds);
            _metrics.Rebuilds.Add(1, new KeyValuePair<string, object?>("reason", e.StatusCode == StatusCode.NotFound ? "not_found" : "unavailable"));
            // Forward passes: on the batch thread, never beside a batched step (the model's run state is shared).
            var cache = await _batcher.RunExclusiveAsync(() => KvRebuild.ForTurn(model, request.History, history, prompt, policy, maxNewTokens), ct);
            var handle = new KvHandle { SessionId = request.Kv.SessionId, Layout = KvLayoutMapping.For(model), Policy = request.Kv.Policy, TokenCount = history + prompt.Length, Version = 0 };
            return (handle, cache, policy, spec, null);
        }
    }

    /// <summary>A checkpoint this worker wrote (tests and the bench read them).</summary>
    /// <param name="Delta">Sent as the changes since an earlier version, not the whole cache.</param>
    /// <param name="BaseTokenCount">A delta's base: the tokens of the version it changes (usually the previous
    /// checkpoint; the one before when this was captured while that one's put was starting).</param>
    /// <param name="MessageBytes">Every byte of the put's messages (K/V data, positions, headers).</param>
    /// <param name="WholeBytes">K/V bytes of the whole cache at this checkpoint (what a whole put sends as data).</param>
    public sealed record CheckpointRecord(string SessionId, int TokenCount, long Version, bool Delta, int BaseTokenCount, long MessageBytes, long DataBytes, long WholeBytes, TimeSpan Elapsed);

    private readonly ConcurrentQueue<CheckpointRecord> _checkpoints = new();
    private long _checkpointsCoalesced, _deltasRefused;

    /// <summary>Checkpoints written so far, oldest first (the most recent 10,000).</summary>
    public IReadOnlyList<CheckpointRecord> Checkpoints => [.. _checkpoints];

    /// <summary>Captured checkpoints dropped because a newer one of the same sequence replaced them before they were sent.</summary>
    public long CheckpointsCoalesced => Interlocked.Read(ref _checkpointsCoalesced);

    /// <summary>Deltas the cache manager refused (base version gone), each followed by a whole put.</summary>
    public long DeltasRefused => Interlocked.Read(ref _deltasRefused);

    private void Record(CheckpointRecord r)
    {
        _checkpoints.Enqueue(r);
        while (_checkpoints.Count > 10_000) _checkpoints.TryDequeue(out _);
    }

    /// <summary>
    /// One Decode call's checkpoint bookkeeping. Checkpoints are captured on the batch thread (what is
    /// to be sent, copied, so the sequence can go on) and written to the cache manager by one pump per call, off the token
    /// path: at most one put of a sequence is in flight, and a capture made while one is (or while the
    /// pump waits for its tokens to be written) replaces any capture still waiting, so a slow cache
    /// manager costs checkpoint freshness, never memory or the stream. A newer version therefore never
    /// lands before an older one. A checkpoint is written only once every token it covers has
    /// been written to the gateway's stream, which keeps checkpoints from running ahead of the client;
    /// a restart still asks the cache manager for a version not ahead of what the gateway received
    /// (GetBlocksRequest.max_token_count), since written is not yet received when a worker dies.
    /// <para>
    /// Incremental (issue 17): each capture is a delta (<see cref="KvDelta"/>) against the digest of the
    /// capture the pump took last (or of the KV the call loaded), made from the live cache so that only
    /// the rows sent are copied; it is written with the version the cache manager stored its base as,
    /// which the base's own put tells. When that base was not stored as sent (its put failed, or the
    /// cache manager compressed it on arrival, or no longer holds it and refuses the delta), the
    /// captures made on it are dropped and the next capture is the whole cache: a lost checkpoint costs
    /// only re-computation on a restart, as it always did.
    /// </para>
    /// </summary>
    private sealed class DecodeCall(DecodeService service, GrpcChannel cacheManager, KvHandle handle, string checkpointSession, int every, int delivered, CancellationToken callAborted)
    {
        private readonly ConcurrentQueue<KvHandle> _written = new();
        private readonly Lock _lock = new();
        private Capture? _next;     // captured, not yet taken by the pump
        private bool _pumping;
        private Base? _base;        // what the next capture diffs against (under _lock: set by the pump and SetBase, cleared by Preempted)
        private int _epoch;         // raised (under _lock) when the captures made on _base cannot be written as deltas
        private float[] _scratch = []; // the batch thread's host buffer for reading one head of the cache
        private int _sinceCheckpoint;
        private int _delivered = delivered;
        private TaskCompletionSource _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
        // Whether the final checkpoint's put was announced (CacheManager.ReservePut) before it streams.
        private readonly TaskCompletionSource<bool> _finalReserved = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>A checkpoint captured on the batch thread: the whole cache (<paramref name="Blocks"/>) or a
        /// delta on <paramref name="On"/> (<paramref name="Layers"/>); <paramref name="Digest"/> is the captured cache's.</summary>
        private sealed record Capture(PutHeader Header, List<KvLayerBlock>? Blocks, Base? On, List<KvLayerDelta>? Layers, KvDigest Digest,
            long WholeBytes, int Covered, bool Final);

        /// <summary>A cache a delta can be made against: its digest, and the version the cache manager stored it
        /// as (0 when it did not store it as it was sent), known once its put has ended.</summary>
        private sealed record Base(KvDigest Digest, int TokenCount, Task<long> Version);

        /// <summary>
        /// Batch thread: the sequence was preempted (its blocks and cache dropped, to be recomputed): its
        /// next checkpoint goes whole. The pump may take a capture meanwhile: then the next diffs against
        /// that one, which is as valid.
        /// </summary>
        public void Preempted()
        {
            lock (_lock) _base = null;
        }

        /// <summary>The whole cache the cache manager holds as <paramref name="version"/> (what this call loaded).</summary>
        public void SetBase(KvDigest loaded, long version, int tokenCount)
        {
            lock (_lock) _base = new Base(loaded, tokenCount, Task.FromResult(version));
        }

        /// <summary>The handler wrote the output's first <paramref name="tokens"/> tokens to the gateway.
        /// Per token: a new completion source only while a checkpoint waits for delivery.</summary>
        public void Written(int tokens)
        {
            // Full fences on both sides: either this sees the waiter, or the waiter sees the count.
            Interlocked.Exchange(ref _delivered, tokens);
            if (Volatile.Read(ref _waiting) != 0)
                Interlocked.Exchange(ref _progress, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }

        private int _waiting;

        private async Task WaitDelivered(int tokens)
        {
            Interlocked.Increment(ref _waiting);
            try
            {
                while (Volatile.Read(ref _delivered) < tokens)
                {
                    var progress = Volatile.Read(ref _progress);
                    if (Volatile.Read(ref _delivered) >= tokens) break;
                    await progress.Task.WaitAsync(callAborted);
                }
            }
            finally
            {
                Interlocked.Decrement(ref _waiting);
            }
        }

        /// <summary>Batch thread: after each token; captures a checkpoint every N tokens and at the end.</summary>
        public void AfterToken(SequenceGeneration seq, GenerationChunk chunk)
        {
            if (chunk.Finish == Engine.Sampling.FinishReason.Abort) return; // the client is gone: free at once
            if (++_sinceCheckpoint < every && chunk.Finish is null) return;
            _sinceCheckpoint = 0;
            var model = service._host.Model!;
            long whole = seq.Cache.Layers.Sum(l => (long)l.Lengths.Sum() * l.HeadDim) * 2 * service._options.KvPrecision.Bytes();
            var header = new PutHeader
            {
                SessionId = checkpointSession,
                Layout = new KvLayout(handle.Layout) { Dtype = KvLayoutMapping.ToWire(service._options.KvPrecision) }, // written in this worker's --kv-dtype
                Policy = handle.Policy,
                TokenCount = seq.Cache.TokensSeen,
                Checkpoint = true,
                OutputIndex = seq.Generated.Count,
            };
            int covered = seq.Generated.Count - 1; // every generated token but the newest is in the cache
            while (true)
            {
                Base? on;
                int epoch;
                lock (_lock) (on, epoch) = (_base, _epoch);
                // Against a base, the delta is made here from the live cache, copying only the rows it sends;
                // without one the whole cache is copied.
                List<KvLayerDelta>? layers = null;
                List<KvLayerBlock>? blocks = null;
                KvDigest digest;
                if (on is not null) layers = KvDelta.Diff(on.Digest, model.Backend, seq.Cache, ref _scratch, out digest);
                else
                {
                    blocks = [.. Enumerable.Range(0, model.Config.Layers).Select(l => KvCacheSnapshot.Capture(model.Backend, seq.Cache, l))];
                    digest = KvDigest.Of(blocks, model.Config.HeadDim);
                }
                lock (_lock)
                {
                    if (epoch != _epoch) continue; // the base went away meanwhile: capture again, whole
                    if (_next is not null) Interlocked.Increment(ref service._checkpointsCoalesced);
                    _next = new Capture(header, blocks, on, layers, digest, whole, covered, chunk.Finish is not null);
                    if (!_pumping)
                    {
                        _pumping = true;
                        _ = Task.Run(PumpAsync); // ends when no capture waits; it logs its own failures
                    }
                    return;
                }
            }
        }

        /// <summary>Writes captures one at a time, the newest waiting one next, until none waits.</summary>
        private async Task PumpAsync()
        {
            while (true)
            {
                Capture c;
                var stored = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
                lock (_lock)
                {
                    if (_next is null)
                    {
                        _pumping = false;
                        return;
                    }
                    c = _next;
                    _next = null;
                    // The captures from now on diff against this one: it is written next, before them.
                    _base = new Base(c.Digest, c.Header.TokenCount, stored.Task);
                }
                long version = 0;
                try
                {
                    await WaitDelivered(c.Covered);
                    // The final put carries the reservation the handler made for it, so that the
                    // cache manager ends the reservation when this put ends; it waits for that call
                    // (quick: the handler makes it as soon as it sees the last chunk).
                    if (c.Final) c.Header.Reserved = await _finalReserved.Task.WaitAsync(callAborted);
                    version = await WriteAsync(c);
                }
                catch (Exception e)
                {
                    // A lost checkpoint costs only re-computation on a restart; the stream goes on.
                    service._logger.LogWarning("checkpoint of session {Session} failed: {Message}", checkpointSession, e.Message);
                }
                finally
                {
                    stored.TrySetResult(version);
                    // Not stored as sent: what the cache manager holds is unknown. A delta waiting or being
                    // made could be refused too: the one waiting is dropped, the one being made is made
                    // again, whole, and so is the next.
                    if (version == 0)
                        lock (_lock)
                        {
                            _epoch++;
                            _base = null;
                            if (_next?.On is not null) _next = null;
                        }
                }
            }
        }

        /// <summary>Puts the capture; the version the cache manager stored it as, or 0 when it did not store it as sent.</summary>
        private async Task<long> WriteAsync(Capture c)
        {
            var sw = Stopwatch.StartNew();
            PutBlocksResponse response;
            long data, messages;
            if (c.On is { } on)
            {
                long baseVersion = await on.Version;
                if (baseVersion == 0) return 0; // made on a capture that was not stored: dropped
                var header = c.Header.Clone();
                header.BaseVersion = baseVersion;
                header.BaseTokenCount = on.TokenCount;
                (response, data, messages) = await KvTransfer.PutCountedAsync(cacheManager, header, c.Layers!.Select(x => (x.Sent, (int[][]?)x.Removed)).ToList(), CancellationToken.None);
                if (response.BaseMissing)
                {
                    // Released, evicted or restarted without a spill: the base is gone.
                    Interlocked.Increment(ref service._deltasRefused);
                    service._logger.LogInformation("the cache manager no longer holds version {Version} of session {Session}: the next checkpoint goes whole", baseVersion, checkpointSession);
                    return 0;
                }
            }
            else (response, data, messages) = await KvTransfer.PutCountedAsync(cacheManager, c.Header, c.Blocks!.Select(x => (x, (int[][]?)null)).ToList(), CancellationToken.None);
            service.Record(new CheckpointRecord(checkpointSession, c.Header.TokenCount, response.Kv?.Version ?? 0, c.On is not null, c.On?.TokenCount ?? 0, messages, data, c.WholeBytes, sw.Elapsed));
            _written.Enqueue(response.Kv!);
            // A put over the policy's budget is compressed on arrival: then the cache manager holds something else.
            return response.Kv is { Version: > 0 } kv && response.KeptTokens == c.Digest.Layers[0].Positions.Max(p => p.Length) ? kv.Version : 0;
        }

        /// <summary>
        /// Announces the final checkpoint's put to the cache manager (ReservePut): until it lands, fails
        /// or 30 s pass, a GetBlocks of the session waits for it, so the next turn of a conversation
        /// still starts from it although the stream completed before it landed. A cache manager that
        /// cannot be reached is not waited for (the put would fail too; readers rebuild the KV).
        /// </summary>
        public async Task ReserveFinalAsync()
        {
            try
            {
                await new LlmCluster.V1.CacheManager.CacheManagerClient(cacheManager).ReservePutAsync(new ReservePutRequest { SessionId = checkpointSession },
                    deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: callAborted);
                _finalReserved.TrySetResult(true);
            }
            catch (RpcException e)
            {
                service._logger.LogWarning("final checkpoint of session {Session} not announced: {Message}", checkpointSession, e.Message);
                _finalReserved.TrySetResult(false);
            }
        }

        public async Task FlushCheckpoints(IServerStreamWriter<DecodeResponse> responses)
        {
            while (_written.TryDequeue(out var kv)) await responses.WriteAsync(new DecodeResponse { Checkpoint = kv });
        }
    }

    public ValueTask DisposeAsync()
    {
        _batcher.Dispose();
        Prefetches.Dispose(); // stops fetches still asking
        Resident.Dispose();
        _channels.Dispose();
        _metrics.Dispose();
        _host.Dispose();
        return ValueTask.CompletedTask;
    }
}
