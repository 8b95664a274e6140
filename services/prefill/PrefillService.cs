using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Grpc.Core;
using Cluster.Serving.Hosting;
using Cluster.Serving.Kv;
using Cluster.Serving.Mapping;
using Cluster.Serving.Routing;
using Cluster.Telemetry;
using LlmCluster.V1;
using Grpc.Net.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Cluster.Prefill;

/// <summary>
/// Runs a prompt through the model (chunked prefill, dense), samples the first token, compresses the
/// prompt's KV to the session's policy and writes what is kept to the cache manager: a bounded policy's
/// KV travels at its budget, not the prompt's length. One prompt at a time per worker: prefill is
/// compute-bound, so a second one would only halve the speed of both.
/// </summary>
public sealed class PrefillService : LlmCluster.V1.Prefill.PrefillBase, IClusterService
{
    public const string MeterName = "LlmCluster.Prefill";
    private readonly ModelHost _host;
    private readonly ServiceOptions _options;
    private readonly ILogger _logger;
    private readonly ChannelCache _channels = new();
    private readonly SemaphoreSlim _model = new(1, 1);
    private readonly Meter _meter = new(MeterName);
    private readonly Histogram<double> _prefillSeconds;
    private readonly Counter<long> _tokens, _rebuilds;

    private PrefillService(ModelHost host, ServiceOptions options, ILogger logger)
    {
        _host = host;
        _logger = logger;
        _options = options;
        _prefillSeconds = _meter.CreateLatencyHistogram("llm_prefill_seconds", "Prompt forward pass");
        _tokens = _meter.CreateCounter<long>("llm_prefill_tokens", description: "Prompt tokens processed");
        _rebuilds = _meter.CreateCounter<long>("llm_kv_rebuilds", description: "Conversations whose history the cache manager lacked, rebuilt from the earlier turns");
        var model = host.Model!;
        _meter.CreateObservableGauge("llm_model_weights_bytes", () => new Measurement<long>(4 * model.Config.ParameterCount, new KeyValuePair<string, object?>("device", "cpu")), "By", "Weights resident");
    }

    public static Task<IClusterService> CreateAsync(ServiceOptions options, ILoggerFactory logging)
    {
        var logger = logging.CreateLogger("prefill");
        return Task.FromResult<IClusterService>(new PrefillService(ModelHost.Load(options, logger, weights: true), options, logger));
    }

    public bool IsReady => true;

    /// <summary>KV bytes this worker has sent to the cache manager (tests read it: in a test process
    /// several services share <see cref="KvTransferMetrics"/>).</summary>
    public long KvBytesPut => Interlocked.Read(ref _kvBytesPut);

    private long _kvBytesPut;

    /// <summary>Conversations whose history this worker rebuilt from the recipe (tests read it).</summary>
    public long KvRebuilds => Interlocked.Read(ref _kvRebuilds);

    private long _kvRebuilds;

    /// <summary>New prompts whose KV this worker sent layer by layer during the pass (tests read it).</summary>
    public long LayerStreamedPuts => Interlocked.Read(ref _layerStreamedPuts);

    private long _layerStreamedPuts;

    /// <summary>
    /// Whether a new prompt's KV goes layer by layer during the pass (--layer-streaming, for prompts of at
    /// least --layer-streaming-min-tokens) rather than after it. On cores shared with the cache manager and
    /// the decode worker that follows the put (one machine), streaming a 236-token prompt's layers slowed
    /// its pass by more than sending them after the pass delays the first decode step; a long prompt's
    /// transfer after the pass is the larger cost (bench/RESULTS.md, issue 17).
    /// </summary>
    private bool StreamsLayers(int promptTokens) => _options.LayerStreaming && promptTokens >= _options.LayerStreamingMinTokens;

    public IReadOnlyList<string> MeterNames => [MeterName, KvTransferMetrics.MeterName];

    public void MapGrpcServices(IEndpointRouteBuilder endpoints) => endpoints.MapGrpcService<PrefillService>();

    public override async Task<PrefillResponse> Prefill(PrefillRequest request, ServerCallContext context)
    {
        var model = _host.Model!;
        var c = model.Config;
        var prompt = request.PromptTokenIds.ToArray();
        RequestChecks.Prompt(prompt, c);
        var p = SamplingMapping.ToEngine(request.Sampling, c.VocabSize).WithResolvedSeed();
        var policy = PolicyMapping.ToSpec(request.KvPolicy) ?? "dense";

        // One first token per output (beam search: none, the decode worker runs the search).
        int outputs = p.IsBeamSearch ? 0 : p.Outputs;
        if (outputs != 1 && request.Continuation is not null)
            throw new InvalidRequestException("sampling: a conversation's later turn has one sampled output (n = 1, no best_of or beam search)");
        var cacheManager = _channels.Get(string.IsNullOrEmpty(request.CacheManager) ? _options.CacheManager : request.CacheManager);
        // A later turn of a conversation starts from the session's stored KV, fetched before the model is taken.
        var cont = request.Continuation;
        var kvPolicy = cont is null ? null : PolicyMapping.Parse(policy, _host.Policies); // the history's policy
        var fetched = cont is null ? default
            : await HistoryKv.FetchAsync(model, cacheManager, request.SessionId, cont.HistoryTokenCount, cont.KvVersion, cont.History, kvPolicy!, p.MaxTokens, context.CancellationToken);
        var queued = Stopwatch.StartNew();
        try
        {
            await _model.WaitAsync(context.CancellationToken);
        }
        catch
        {
            fetched.Cache?.Dispose();
            throw;
        }
        var queue = queued.Elapsed;
        var firsts = new List<GenerationChunk>(outputs);
        // What the cache manager will hold: the history (if any) and this turn's prompt.
        var header = new PutHeader
        {
            SessionId = request.SessionId,
            Layout = KvLayoutMapping.For(model, _options.KvPrecision),
            Policy = request.KvPolicy ?? PolicyMapping.ToWire(policy),
            TokenCount = (cont?.HistoryTokenCount ?? 0) + prompt.Length,
        };
        // The first token goes out once the put is announced, not once it has landed: the cache manager
        // holds readers of the session until it lands (ReservePut), so the decode worker still gets this
        // version, and TTFT no longer includes the transfer. The handle names no version: decode asks for
        // the newest one that lacks the first token, which is this one.
        var kv = new KvHandle { SessionId = request.SessionId, Layout = header.Layout, Policy = header.Policy, TokenCount = header.TokenCount, Version = 0 };
        List<KvLayerBlock>? blocks = null;
        var sw = Stopwatch.StartNew();
        try
        {
            var history = fetched.RebuildReason is { } reason ? Rebuild(request.SessionId, cont!, kvPolicy!, reason, p.MaxTokens) : fetched.Cache;
            using var seq = new SequenceGeneration(c, p, _host.Tokenizer, prompt, history ?? model.CreateCache(prompt.Length));
            if (history is null)
            {
                // Dense prefill (the first token's logits see the whole prompt), then the policy, so
                // that only the kept tokens travel; the cache manager stores them as they come. With
                // layer streaming each layer is compressed and sent as soon as the pass is done with it.
                var send = SendPolicy(policy);
                // The put is announced and opened before the pass (under the model lock: one short call), so
                // that a decode worker prefetching the KV waits for it at the cache manager and follows it as
                // it lands. A long prompt's layers go as the pass finishes each one; a short prompt's after
                // the pass (StreamsLayers).
                var stream = await StartLayerPutAsync(cacheManager, header, context.CancellationToken); // null: unreachable, logged; the KV is not stored
                bool streamed = stream is not null && StreamsLayers(prompt.Length);
                try
                {
                    if (streamed)
                    {
                        Interlocked.Increment(ref _layerStreamedPuts);
                        ForwardStreamingLayers(model, prompt, seq, send, stream!);
                    }
                    else
                    {
                        KvRoom.Forward(model, prompt, seq.Cache, seq.Logits);
                        PromptKvCompression.Apply(model, send, seq.Cache);
                    }
                    firsts.AddRange(FirstTokens(seq, p, prompt, outputs, sw.Elapsed));
                    if (stream is not null && !streamed)
                    {
                        for (int l = 0; l < c.Layers; l++) stream.Writer.TryWrite(KvCacheSnapshot.Capture(model.Backend, seq.Cache, l));
                        stream.Writer.TryComplete();
                    }
                }
                catch (Exception e)
                {
                    stream?.Writer.TryComplete(e); // the put fails; readers of the session rebuild
                    throw;
                }
            }
            else
            {
                firsts.Add(ConversationTurn.Start(model, seq, prompt, p.MaxTokens, sw.Elapsed));
                blocks = Capture(model, seq.Cache);
            }
            if (blocks is not null) header.TokenCount = kv.TokenCount = seq.Cache.TokensSeen; // (a streamed put's count was known before: the prompt's)
        }
        finally
        {
            _model.Release();
        }
        var prefill = sw.Elapsed;
        _prefillSeconds.Record(prefill.TotalSeconds);
        _tokens.Add(prompt.Length);

        if (blocks is not null && await TryReservePutAsync(cacheManager, request.SessionId, context.CancellationToken))
        {
            header.Reserved = true;
            _ = PutInBackgroundAsync(cacheManager, header, blocks);
        }

        var response = new PrefillResponse
        {
            Kv = kv,
            Timings = new Timings { QueueSeconds = queue.TotalSeconds, PrefillSeconds = prefill.TotalSeconds },
        };
        foreach (var first in firsts)
        {
            response.Outputs.Add(new FirstToken
            {
                TokenId = first.TokenId!.Value,
                Logprob = SamplingMapping.ToWire(first.Logprobs),
                Finished = first.Finish is not null,
                FinishReason = SamplingMapping.ToWire(first.Finish),
                Text = first.Text,
            });
        }
        return response;
    }

    /// <summary>
    /// The first token of each of <paramref name="outputs"/> outputs, all from the prompt's logits in
    /// <paramref name="seq"/> (output 0): output i draws with the seed's stream i, exactly as the local
    /// generator's forks of one prefill do, so the prompt runs once however many outputs there are.
    /// </summary>
    private IEnumerable<GenerationChunk> FirstTokens(SequenceGeneration seq, Engine.Sampling.SamplingParameters p, int[] prompt, int outputs, TimeSpan elapsed)
    {
        var c = _host.Config;
        for (int i = 0; i < outputs; i++)
        {
            if (i == 0)
            {
                yield return seq.Step(elapsed);
                continue;
            }
            using var other = new SequenceGeneration(c, p, _host.Tokenizer, prompt, seq.Cache, i, ownsCache: false);
            seq.Logits.CopyTo(other.Logits, 0);
            yield return other.Step(elapsed);
        }
    }

    private static List<KvLayerBlock> Capture(LlamaModel model, SequenceKvCache cache) =>
        Enumerable.Range(0, model.Config.Layers).Select(l => KvCacheSnapshot.Capture(model.Backend, cache, l)).ToList();

    /// <summary>Announces the put (readers of the session wait for it); false when the cache manager is
    /// unreachable.</summary>
    private async Task<bool> TryReservePutAsync(GrpcChannel cacheManager, string sessionId, CancellationToken ct)
    {
        try
        {
            await new LlmCluster.V1.CacheManager.CacheManagerClient(cacheManager).ReservePutAsync(new ReservePutRequest { SessionId = sessionId }, cancellationToken: ct);
            return true;
        }
        catch (Exception e) when (!ct.IsCancellationRequested && (e is RpcException { StatusCode: StatusCode.Unavailable } || StatusMapping.IsUnreachable(e)))
        {
            // The cache manager is a cache: without it the first token still goes out, and the decode
            // worker rebuilds this KV from the prompt (and a later turn's history recipe) when it cannot
            // fetch it (KvRebuild), so a dead cache manager costs recomputation, not the request (nor
            // this worker's place in rotation).
            _logger.LogWarning("cache manager unreachable; session {Session}'s KV was not stored (decode rebuilds it): {Reason}", sessionId, e.Message);
            return false;
        }
    }

    /// <summary>Announces the put and opens it, to be fed layer by layer; null when the cache manager is unreachable.</summary>
    private async Task<Channel<KvLayerBlock>?> StartLayerPutAsync(GrpcChannel cacheManager, PutHeader header, CancellationToken ct)
    {
        if (!await TryReservePutAsync(cacheManager, header.SessionId, ct)) return null;
        header.Reserved = true;
        var layers = Channel.CreateUnbounded<KvLayerBlock>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        _ = PutInBackgroundAsync(header, () => KvTransfer.PutAsync(cacheManager, header, layers.Reader, CancellationToken.None));
        return layers;
    }

    /// <summary>
    /// The prompt's pass with layer-wise streaming (issue 17): in its last chunk, each layer is compressed
    /// by <paramref name="send"/> and written to the put as soon as its attention has run, so the transfer
    /// of the early layers overlaps the later ones (vLLM's save_kv_layer). The cache and the logits are
    /// those of a dense pass compressed after it (<see cref="KvCompressionPolicy.CompressLayer"/>).
    /// </summary>
    private static void ForwardStreamingLayers(LlamaModel model, int[] prompt, SequenceGeneration seq, KvCompressionPolicy send, Channel<KvLayerBlock> layers)
    {
        var cache = seq.Cache;
        var rope = KvLayoutMapping.Rope(KvLayoutMapping.For(model)); // as PromptKvCompression: the layout's table
        // The chunks before the last run as Forward would run them (its last chunk is a whole one, so the
        // layers have a whole chunk's time to go); a layer's KV is final only in the last.
        int last = Math.Max(0, prompt.Length - model.MaxChunk);
        try
        {
            if (last > 0) KvRoom.Forward(model, prompt.AsSpan(0, last), cache, seq.Logits);
            model.LayerDone = l =>
            {
                send.CompressLayer(model.Backend, rope, cache, l, prompt.Length);
                layers.Writer.TryWrite(KvCacheSnapshot.Capture(model.Backend, cache, l));
            };
            KvRoom.Forward(model, prompt.AsSpan(last), cache, seq.Logits);
            layers.Writer.TryComplete();
        }
        catch (Exception e)
        {
            layers.Writer.TryComplete(e); // the put fails; readers of the session rebuild
            throw;
        }
        finally
        {
            model.LayerDone = null;
        }
    }

    /// <summary>The announced put, after the response: a failure costs the decode worker a rebuild
    /// (KvRebuild), never the request, which has its first token already.</summary>
    private Task PutInBackgroundAsync(GrpcChannel cacheManager, PutHeader header, List<KvLayerBlock> blocks) =>
        PutInBackgroundAsync(header, () => KvTransfer.PutAsync(cacheManager, header, blocks, CancellationToken.None));

    private async Task PutInBackgroundAsync(PutHeader header, Func<Task<(PutBlocksResponse Response, long Bytes)>> put)
    {
        try
        {
            var (_, bytes) = await put();
            Interlocked.Add(ref _kvBytesPut, bytes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Nobody awaits this task: whatever ended the put (the cache manager, the network, this
            // worker shutting down) is logged here and costs only the rebuild.
            _logger.LogWarning("KV of session {Session} was not stored (decode rebuilds it): {Reason}", header.SessionId, e.Message);
        }
    }

    /// <summary>The policy to compress with before sending, or dense to send the whole KV and let the
    /// cache manager compress it: a worker started without the Q-Filters file cannot build
    /// `qfilters(...)` (the gateway and cache manager, which have it, validated the spec).</summary>
    private KvCompressionPolicy SendPolicy(string spec)
    {
        try
        {
            return PolicyMapping.Parse(spec, _host.Policies);
        }
        catch (InvalidRequestException e)
        {
            _logger.LogWarning("sending dense KV for policy {Policy}, which this prefill worker cannot build: {Reason}", spec, e.Message);
            return Cluster.Engine.Compression.DensePolicy.Default;
        }
    }

    /// <summary>The history made again from the session store's recipe (the cache manager lost it, is down
    /// or holds an older version): forward passes, so only while this worker's model is held.</summary>
    private SequenceKvCache Rebuild(string sessionId, PrefillContinuation cont, KvCompressionPolicy policy, string reason, int maxTokens)
    {
        _logger.LogWarning("KV of session {Session} not in the cache manager ({Reason}); rebuilding its {Turns} earlier turns", sessionId, reason, cont.History!.Turns.Count);
        Interlocked.Increment(ref _kvRebuilds);
        _rebuilds.Add(1, new KeyValuePair<string, object?>("reason", reason));
        return HistoryKv.Rebuild(_host.Model!, cont.History, policy, cont.HistoryTokenCount, maxTokens);
    }

    public async ValueTask DisposeAsync()
    {
        // A pass may still be running: the host's graceful stop gives requests 5 s, then disposes the
        // service with them in flight, and a pass cannot be cancelled. Freeing the model under it would let
        // it write into freed native memory (a CI test host died with "free(): corrupted unsorted chunks"
        // at a cluster's teardown); the model lock is held for every pass, so taking it waits for the last.
        await _model.WaitAsync();
        _channels.Dispose();
        _meter.Dispose();
        _host.Dispose();
    }
}
