using Cluster.Engine.Compression;
using Cluster.Engine.KvCache;
using Cluster.Engine.Model;
using Grpc.Core;
using Grpc.Net.Client;
using LlmCluster.V1;

namespace Cluster.Serving.Kv;

/// <summary>
/// The KV a conversation's earlier turns left (the history a later turn starts from), for whichever
/// worker runs the turn's prompt: the prefill worker, or the decode worker that runs a short turn
/// itself. Fetched from the cache manager; when it has lost the session, is down, or holds only an older
/// version (the previous turn's final checkpoint never landed), the caller rebuilds it from the recipe
/// (<see cref="Rebuild"/>) on its model's own thread, since a rebuild runs forward passes.
/// </summary>
public static class HistoryKv
{
    /// <summary>The restored history, or why it must be rebuilt (not_found, unavailable, older_version).</summary>
    public readonly record struct Fetched(SequenceKvCache? Cache, string? RebuildReason);

    /// <param name="historyTokens">Tokens the KV to continue has seen; the newest stored version holding at
    /// most this many is taken (a specific <paramref name="version"/> when not 0).</param>
    /// <param name="recipe">How the history was made; without it a missing history is an error, not a rebuild.</param>
    public static async Task<Fetched> FetchAsync(LlamaModel model, GrpcChannel cacheManager, string sessionId, int historyTokens, long version,
        KvRecipe? recipe, KvCompressionPolicy policy, int maxTokens, CancellationToken ct)
    {
        KvHandle handle;
        List<KvLayerBlock> blocks;
        try
        {
            (handle, blocks, _) = await KvTransfer.GetAsync(cacheManager, sessionId, version, ct, version == 0 ? historyTokens : 0);
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.NotFound or StatusCode.Unavailable && recipe is not null && !ct.IsCancellationRequested)
        {
            return new Fetched(null, e.StatusCode == StatusCode.NotFound ? "not_found" : "unavailable");
        }
        if (handle.TokenCount == historyTokens) return new Fetched(KvRestore.ToCache(model, handle, blocks, policy, maxTokens), null);
        if (recipe is null)
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"session '{sessionId}': the stored KV holds {handle.TokenCount} tokens, the turn continues after {historyTokens}"));
        return new Fetched(null, "older_version");
    }

    /// <summary>The history made again from its recipe (forward passes: call it where the model is yours).</summary>
    public static SequenceKvCache Rebuild(LlamaModel model, KvRecipe recipe, KvCompressionPolicy policy, int historyTokens, int maxTokens) =>
        KvRebuild.FromRecipe(model, recipe, policy, historyTokens, Math.Min(historyTokens + maxTokens, policy.Budget ?? model.Config.MaxPositions));
}
