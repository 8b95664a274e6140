using System.Diagnostics;
using System.Diagnostics.Metrics;
using Cluster.Engine.Compression;
using Cluster.Engine.Generation;
using Cluster.Engine.KvCache;
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
        var kvPolicy = cont is null || policy == "dense" ? null : PolicyMapping.Parse(policy, _host.Policies);
        var fetched = cont is null ? default
            : await HistoryKv.FetchAsync(model, cacheManager, request.SessionId, cont.HistoryTokenCount, cont.KvVersion, cont.History, kvPolicy, p.MaxTokens, context.CancellationToken);
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
        List<KvLayerBlock> blocks;
        int tokensSeen;
        var sw = Stopwatch.StartNew();
        try
        {
            var history = fetched.RebuildReason is { } reason ? Rebuild(request.SessionId, cont!, kvPolicy, reason, p.MaxTokens) : fetched.Cache;
            using var seq = new SequenceGeneration(c, p, _host.Tokenizer, prompt, history ?? model.CreateCache(prompt.Length));
            if (history is null)
            {
                // Dense prefill (the first token's logits see the whole prompt), then the policy, so
                // that only the kept tokens travel; the cache manager stores them as they come.
                model.Forward(prompt, seq.Cache, seq.Logits);
                firsts.AddRange(FirstTokens(seq, p, prompt, outputs, sw.Elapsed));
                PromptKvCompression.Apply(model, SendPolicy(policy), seq.Cache);
            }
            else
            {
                firsts.Add(ConversationTurn.Start(model, seq, prompt, p.MaxTokens, sw.Elapsed));
            }
            tokensSeen = seq.Cache.TokensSeen;
            blocks = Enumerable.Range(0, c.Layers).Select(l => KvCacheSnapshot.Capture(model.Backend, seq.Cache, l)).ToList();
        }
        finally
        {
            _model.Release();
        }
        var prefill = sw.Elapsed;
        _prefillSeconds.Record(prefill.TotalSeconds);
        _tokens.Add(prompt.Length);

        var header = new PutHeader
        {
            SessionId = request.SessionId,
            Layout = KvLayoutMapping.For(model, _options.KvPrecision),
            Policy = request.KvPolicy ?? PolicyMapping.ToWire(policy),
            TokenCount = tokensSeen,
        };
        // The first token goes out once the put is announced, not once it has landed: the cache manager
        // holds readers of the session until it lands (ReservePut), so the decode worker still gets this
        // version, and TTFT no longer includes the transfer. The handle names no version: decode asks for
        // the newest one that lacks the first token, which is this one.
        var kv = new KvHandle { SessionId = request.SessionId, Layout = header.Layout, Policy = header.Policy, TokenCount = tokensSeen, Version = 0 };
        try
        {
            await new LlmCluster.V1.CacheManager.CacheManagerClient(cacheManager).ReservePutAsync(new ReservePutRequest { SessionId = request.SessionId }, cancellationToken: context.CancellationToken);
            header.Reserved = true;
            _ = PutInBackgroundAsync(cacheManager, header, blocks);
        }
        catch (Exception e) when (!context.CancellationToken.IsCancellationRequested
            && (e is RpcException { StatusCode: StatusCode.Unavailable } || StatusMapping.IsUnreachable(e)))
        {
            // The cache manager is a cache: without it the first token still goes out, and the decode
            // worker rebuilds this KV from the prompt (and a later turn's history recipe) when it cannot
            // fetch it (KvRebuild), so a dead cache manager costs recomputation, not the request (nor
            // this worker's place in rotation).
            _logger.LogWarning("cache manager unreachable; session {Session}'s KV was not stored (decode rebuilds it): {Reason}", request.SessionId, e.Message);
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

    /// <summary>The announced put, after the response: a failure costs the decode worker a rebuild
    /// (KvRebuild), never the request, which has its first token already.</summary>
    private async Task PutInBackgroundAsync(GrpcChannel cacheManager, PutHeader header, List<KvLayerBlock> blocks)
    {
        try
        {
            var (_, bytes) = await KvTransfer.PutAsync(cacheManager, header, blocks, CancellationToken.None);
            Interlocked.Add(ref _kvBytesPut, bytes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Nobody awaits this task: whatever ended the put (the cache manager, the network, this
            // worker shutting down) is logged here and costs only the rebuild.
            _logger.LogWarning("KV of session {Session} was not stored (decode rebuilds it): {Reason}", header.SessionId, e.Message);
        }
    }

    /// <summary>The policy to compress with before sending, or null to send the dense KV and let the
    /// cache manager compress it: a worker started without the Q-Filters file cannot build
    /// `qfilters(...)` (the gateway and cache manager, which have it, validated the spec).</summary>
    private KvCompressionPolicy? SendPolicy(string spec)
    {
        try
        {
            return PolicyMapping.Parse(spec, _host.Policies);
        }
        catch (InvalidRequestException e)
        {
            _logger.LogWarning("sending dense KV for policy {Policy}, which this prefill worker cannot build: {Reason}", spec, e.Message);
            return null;
        }
    }

    /// <summary>The history made again from the session store's recipe (the cache manager lost it, is down
    /// or holds an older version): forward passes, so only while this worker's model is held.</summary>
    private SequenceKvCache Rebuild(string sessionId, PrefillContinuation cont, KvCompressionPolicy? policy, string reason, int maxTokens)
    {
        _logger.LogWarning("KV of session {Session} not in the cache manager ({Reason}); rebuilding its {Turns} earlier turns", sessionId, reason, cont.History!.Turns.Count);
        Interlocked.Increment(ref _kvRebuilds);
        _rebuilds.Add(1, new KeyValuePair<string, object?>("reason", reason));
        return HistoryKv.Rebuild(_host.Model!, cont.History, policy, cont.HistoryTokenCount, maxTokens);
    }

    public ValueTask DisposeAsync()
    {
        _channels.Dispose();
        _meter.Dispose();
        _host.Dispose();
        return ValueTask.CompletedTask;
    }
}
