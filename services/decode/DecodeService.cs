using System.Collections.Concurrent;
using System.Diagnostics;
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
        Admission = new KvAdmission((long)options.KvMemoryMb << 20, options.MaxQueue);
        _metrics = new DecodeMetrics(() => _batcher!.Running, KvUsage, 4 * host.Config.ParameterCount, Admission);
        _batcher = new ContinuousBatcher(host.Model!, Math.Min(options.MaxBatch, host.Model!.MaxChunk),
            afterStep: (size, elapsed) =>
            {
                _metrics.BatchSize.Record(size);
                _metrics.StepSeconds.Record(elapsed.TotalSeconds);
                _metrics.Tokens.Add(size);
            },
            afterToken: (seq, chunk, state) => ((DecodeCall)state!).AfterToken(seq, chunk));
    }

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging)
    {
        var logger = logging.CreateLogger("decode");
        NativeHeap.Configure();
        return Task.FromResult<IClusterService>(new DecodeService(ModelHost.Load(options, logger, weights: true), options, logger));
    }

    public bool IsReady => true;

    public IReadOnlyList<string> MeterNames => [MeterName, KvTransferMetrics.MeterName];

    /// <summary>Sequences whose KV this worker rebuilt from the prompt (tests read it: in a test process
    /// several services share meter names, so the metric alone cannot say which worker counted).</summary>
    public long KvRebuilds => Interlocked.Read(ref _kvRebuilds);

    private long _kvRebuilds;

    /// <summary>The KV budget and its queue (tests read its peak).</summary>
    public KvAdmission Admission { get; }

    /// <summary>Sequences in the batch (tests read it to see that an abort freed its sequence).</summary>
    public int Running => _batcher.Running;

    public void MapGrpcServices(IEndpointRouteBuilder endpoints) => endpoints.MapGrpcService<DecodeService>();

    private (long Used, long Allocated) KvUsage()
    {
        long used = 0, allocated = 0;
        foreach (var call in _calls.Keys)
        {
            var cache = call.Cache;
            if (cache is null) continue;
            used += cache.Layers.Sum(l => (long)l.Lengths.Sum() * l.HeadDim * 8);
            allocated += cache.Layers.Sum(l => (long)l.KvHeads * l.Capacity * l.HeadDim * 8);
        }
        return (used, allocated);
    }

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
        if (generated.Length == 0) throw new RpcException(new Status(StatusCode.InvalidArgument, "generated_token_ids is empty: decode continues after the first token from prefill"));

        var cacheManager = _channels.Get(string.IsNullOrEmpty(request.CacheManager) ? _options.CacheManager : request.CacheManager);
        // Without a version (a restart), the newest KV that lacks at least the newest streamed token.
        int history = request.HistoryTokenCount; // earlier turns of a conversation, before this turn's prompt
        if (history < 0) throw new RpcException(new Status(StatusCode.InvalidArgument, $"history_token_count must be >= 0, got {history}"));
        // Room for the whole cache before any of it is loaded; waits in line (or is refused) when full.
        using var reservation = await Admission.AcquireAsync(ReservedBytes(request, history + prompt.Length + generated.Length, p.MaxTokens), context.CancellationToken);
        int maxTokens = request.Kv.Version == 0 ? history + prompt.Length + generated.Length - 1 : 0;
        var (handle, cache, policy, spec) = await LoadOrRebuildAsync(request, cacheManager, prompt, history, maxTokens, p.MaxTokens, context.CancellationToken);
        int cached = handle.TokenCount - history - prompt.Length;
        // The cache must lack at least the newest token: its logits come from running it (a compressed
        // cache cannot be rolled back to recompute them).
        if (cached < 0 || cached >= generated.Length)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the KV holds {handle.TokenCount} tokens; expected the history's {history} and the prompt's {prompt.Length} plus fewer than the {generated.Length} generated"));
        int evictedBefore = cache.TokensSeen - cache.Length; // by the cache manager's policy, before this worker

        var seq = new SequenceGeneration(c, p, _host.Tokenizer, prompt, cache, request.OutputIndex);
        foreach (var id in generated) seq.Replay(id);
        int every = request.CheckpointEvery > 0 ? request.CheckpointEvery : _options.CheckpointEvery;
        // Outputs of one request (n > 1) continue the same prompt KV but checkpoint apart.
        var checkpointSession = string.IsNullOrEmpty(request.CheckpointSessionId) ? handle.SessionId : request.CheckpointSessionId;
        var call = new DecodeCall(this, cacheManager, handle, checkpointSession, every, generated.Length, context.CancellationToken) { Cache = cache };
        _calls[call] = 0;
        try
        {
            // The tokens the cache lacks (at least the newest one) run when the sequence joins the batch.
            var reader = _batcher.Add(seq, generated[cached..], context.CancellationToken, call);
            var started = Stopwatch.StartNew();
            int produced = 0;
            await foreach (var chunk in reader.ReadAllAsync(CancellationToken.None))
            {
                await call.FlushCheckpoints(responses);
                if (chunk.TokenId is int id)
                {
                    var dc = new DecodeChunk { TokenIds = { id }, OutputIndex = generated.Length + produced, Text = chunk.Text };
                    if (SamplingMapping.ToWire(chunk.Logprobs) is { } lp) dc.Logprobs.Add(lp);
                    await responses.WriteAsync(new DecodeResponse { Chunk = dc });
                    produced++;
                    call.Written(generated.Length + produced);
                }
                else if (chunk.Text.Length > 0)
                {
                    await responses.WriteAsync(new DecodeResponse { Chunk = new DecodeChunk { OutputIndex = generated.Length + produced, Text = chunk.Text } });
                }
                if (chunk.Finish is { } finish)
                {
                    if (finish != Engine.Sampling.FinishReason.Abort)
                    {
                        await call.WaitForCheckpoints();
                        await call.FlushCheckpoints(responses);
                    }
                    await responses.WriteAsync(new DecodeResponse
                    {
                        Complete = new DecodeComplete
                        {
                            FinishReason = SamplingMapping.ToWire(finish),
                            GeneratedTokens = produced,
                            TpotSeconds = produced > 1 ? started.Elapsed.TotalSeconds / produced : 0,
                        },
                    });
                }
            }
            context.CancellationToken.ThrowIfCancellationRequested();
        }
        finally
        {
            _calls.TryRemove(call, out _);
            // llm_kv_evictions_total: the tokens this worker's policy dropped from the sequence's cache.
            if (policy is not null) _metrics.Evictions.Add(cache.TokensSeen - cache.Length - evictedBefore, new KeyValuePair<string, object?>("policy", spec.Split('(')[0]));
        }
    }

    /// <summary>The most KV the sequence's cache can hold: the tokens it has (earlier turns, the prompt,
    /// the output so far) plus max_tokens, or its policy's budget, whichever is smaller: at least the
    /// capacity <see cref="KvRestore.ToCache"/> and <see cref="KvRebuild"/> give it.</summary>
    private long ReservedBytes(DecodeRequest request, int tokensSoFar, int maxTokens)
    {
        var c = _host.Config;
        var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
        int? budget = spec == "dense" ? null : PolicyMapping.Parse(spec, _host.Policies).Budget;
        long tokens = Math.Min((long)tokensSoFar + maxTokens + 1, (budget ?? c.MaxPositions) + 1L);
        return tokens * c.Layers * c.KvHeads * c.HeadDim * 2 * sizeof(float);
    }

    /// <summary>
    /// The sequence's KV from the cache manager; when the cache manager has lost it (NOT_FOUND) or cannot
    /// be reached (UNAVAILABLE), the KV prefill stored, rebuilt from the prompt (<see cref="KvRebuild"/>):
    /// a restart of the cache manager costs recomputation, never the stream. A conversation's later turn
    /// (history &gt; 0) is rebuilt from the request's recipe of the earlier turns, then this turn's fed tokens.
    /// </summary>
    private async Task<(KvHandle Handle, SequenceKvCache Cache, Engine.Compression.KvCompressionPolicy? Policy, string Spec)> LoadOrRebuildAsync(
        DecodeRequest request, GrpcChannel cacheManager, int[] prompt, int history, int maxTokens, int maxNewTokens, CancellationToken ct)
    {
        var model = _host.Model!;
        var c = model.Config;
        try
        {
            var (handle, blocks, _) = await KvTransfer.GetAsync(cacheManager, request.Kv.SessionId, request.Kv.Version, ct, maxTokens);
            var spec = PolicyMapping.ToSpec(handle.Policy) ?? "dense";
            var policy = spec == "dense" ? null : PolicyMapping.Parse(spec, _host.Policies);
            return (handle, KvRestore.ToCache(model, handle, blocks, policy, maxNewTokens), policy, spec);
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && (history == 0 || request.History is not null)
            && request.Kv.Policy is not null && !ct.IsCancellationRequested)
        {
            var spec = PolicyMapping.ToSpec(request.Kv.Policy) ?? "dense";
            var policy = spec == "dense" ? null : PolicyMapping.Parse(spec, _host.Policies);
            _logger.LogWarning("KV of session {Session} not in the cache manager ({Code}); rebuilding it from the prompt", request.Kv.SessionId, e.StatusCode);
            Interlocked.Increment(ref _kvRebuilds);
            _metrics.Rebuilds.Add(1, new KeyValuePair<string, object?>("reason", e.StatusCode == StatusCode.NotFound ? "not_found" : "unavailable"));
            var cache = KvRebuild.ForTurn(model, request.History, history, prompt, policy, maxNewTokens);
            var handle = new KvHandle { SessionId = request.Kv.SessionId, Layout = KvLayoutMapping.For(model), Policy = request.Kv.Policy, TokenCount = history + prompt.Length, Version = 0 };
            return (handle, cache, policy, spec);
        }
    }

    /// <summary>
    /// One Decode call's checkpoint bookkeeping. Checkpoints are captured on the batch thread (a copy,
    /// so the sequence can go on) and written to the cache manager one after another, so a newer one
    /// never lands before an older one. A checkpoint is written only once every token it covers has
    /// been written to the gateway's stream, which keeps checkpoints from running ahead of the client;
    /// a restart still asks the cache manager for a version not ahead of what the gateway received
    /// (GetBlocksRequest.max_token_count), since written is not yet received when a worker dies.
    /// </summary>
    private sealed class DecodeCall(DecodeService service, GrpcChannel cacheManager, KvHandle handle, string checkpointSession, int every, int delivered, CancellationToken callAborted)
    {
        private readonly ConcurrentQueue<KvHandle> _written = new();
        private Task _chain = Task.CompletedTask;
        private int _sinceCheckpoint;
        private int _delivered = delivered;
        private TaskCompletionSource _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
        // Set once the final checkpoint is chained: the batcher writes a chunk before it calls
        // AfterToken, so the handler can see the last chunk before that checkpoint is scheduled.
        private readonly TaskCompletionSource _finalScheduled = new(TaskCreationOptions.RunContinuationsAsynchronously);

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

        public SequenceKvCache? Cache { get; init; }

        /// <summary>Batch thread: after each token; captures a checkpoint every N tokens and at the end.</summary>
        public void AfterToken(SequenceGeneration seq, GenerationChunk chunk)
        {
            if (chunk.Finish == Engine.Sampling.FinishReason.Abort) return; // the client is gone: free at once
            if (++_sinceCheckpoint < every && chunk.Finish is null) return;
            _sinceCheckpoint = 0;
            var model = service._host.Model!;
            var blocks = Enumerable.Range(0, model.Config.Layers).Select(l => KvCacheSnapshot.Capture(model.Backend, seq.Cache, l)).ToList();
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
            _chain = _chain.ContinueWith(async _ =>
            {
                try
                {
                    await WaitDelivered(covered);
                    var (response, _) = await KvTransfer.PutAsync(cacheManager, header, blocks, CancellationToken.None);
                    _written.Enqueue(response.Kv);
                }
                catch (Exception e) when (e is RpcException or OperationCanceledException)
                {
                    // A lost checkpoint costs only re-computation on a restart; the stream goes on.
                    service._logger.LogWarning("checkpoint of session {Session} failed: {Message}", checkpointSession, e.Message);
                }
            }, TaskScheduler.Default).Unwrap();
            if (chunk.Finish is not null) _finalScheduled.TrySetResult();
        }

        /// <summary>Waits for every checkpoint, the final one included (the next turn of a
        /// conversation starts from it).</summary>
        public async Task WaitForCheckpoints()
        {
            await _finalScheduled.Task.WaitAsync(callAborted);
            await _chain;
        }

        public async Task FlushCheckpoints(IServerStreamWriter<DecodeResponse> responses)
        {
            while (_written.TryDequeue(out var kv)) await responses.WriteAsync(new DecodeResponse { Checkpoint = kv });
        }
    }

    public ValueTask DisposeAsync()
    {
        _batcher.Dispose();
        _channels.Dispose();
        _metrics.Dispose();
        _host.Dispose();
        return ValueTask.CompletedTask;
    }
}
