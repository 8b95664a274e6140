using Cluster.Sessions;
using Grpc.Core;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// How a conversation's KV was made (<see cref="KvRecipe"/>), read back from the session store, which
/// is the source of truth: each earlier turn's fed tokens and max_tokens from its record, and the
/// tokens its decode ran from its token log. A worker that finds the cache manager without the
/// session's KV replays it (KvRebuild) instead of failing the turn.
/// </summary>
internal static class HistoryRecipe
{
    /// <summary>The recipe of turns 0..<paramref name="turns"/>-1 of <paramref name="conversation"/>,
    /// whose KV has seen <paramref name="historyTokens"/> tokens when the next turn starts.</summary>
    public static async Task<KvRecipe> BuildAsync(ISessionStore sessions, SessionInfo conversation, int turns, int historyTokens, CancellationToken ct)
    {
        var records = new List<SessionRecord>(turns);
        for (int t = 0; t < turns; t++)
        {
            var info = t == 0 ? conversation : await sessions.GetAsync(SessionRecord.TurnId(conversation.Id, t), ct);
            records.Add((info is null ? null : SessionRecord.From(info))
                ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"turn {t} of session '{conversation.Id}' expired or lacks its record")));
        }
        var recipe = new KvRecipe();
        for (int t = 0; t < turns; t++)
        {
            var record = records[t];
            // The turn's decode ran the generated tokens that the next turn's history counts beyond
            // this turn's (the next turn fed the rest itself).
            int nextHistory = t + 1 < turns ? records[t + 1].History : historyTokens;
            int decoded = nextHistory - record.History - record.Prompt.Length;
            if (decoded < 0)
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"turn {t} of session '{conversation.Id}': its record does not add up to the next turn's history"));
            var turn = new KvRecipeTurn { FedTokenIds = { record.Prompt }, MaxTokens = record.MaxTokens };
            turn.DecodedTokenIds.Add(await ReadLogAsync(sessions, record.Id, decoded, ct));
            recipe.Turns.Add(turn);
        }
        return recipe;
    }

    /// <summary>The first <paramref name="count"/> tokens of a turn's log.</summary>
    private static async Task<List<int>> ReadLogAsync(ISessionStore sessions, string turnId, int count, CancellationToken ct)
    {
        var ids = new List<int>(count);
        while (ids.Count < count)
        {
            var page = await sessions.ReadTokensAsync(turnId, ids.Count - 1, count - ids.Count, ct);
            if (page.Entries.Count == 0 || page.Entries[0].Index != ids.Count)
                throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the token log of '{turnId}' lacks tokens {ids.Count}..{count - 1}"));
            ids.AddRange(page.Entries.Select(e => e.TokenId));
        }
        return ids;
    }
}
