using System.Globalization;
using System.Runtime.InteropServices;
using Cluster.Sessions;
using Google.Protobuf;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// What a session must keep so that any gateway can continue its stream: the prompt's token ids and
/// the sampling parameters with the resolved seed, stored in the session's metadata (and so in Redis).
/// A conversation keeps one record per turn, each with its own token log (indices from 0 per turn):
/// turn 0 is the session itself, turn t &gt; 0 is "<c>{session}/{t}</c>", whose prompt is the fed
/// tokens (the previous turn's tokens the KV lacks, after a finished turn its last one, then the new
/// prompt), and whose KV lives under the session
/// (<see cref="KvSession"/>) after <see cref="History"/> earlier tokens. The session's own record
/// points at its latest turn (<see cref="TurnsKey"/>).
/// </summary>
internal sealed record SessionRecord(string Id, int[] Prompt, SamplingParams Sampling, string Policy, string KvSession, int History, int Turn, int MaxTokens)
{
    private const string PromptKey = "prompt_ids", SamplingKey = "sampling", KvSessionKey = "kv_session", HistoryKey = "history", TurnKey = "turn", MaxTokensKey = "max_tokens";

    /// <summary>In the session's record: the number of its latest turn (absent: 0, the first).</summary>
    public const string TurnsKey = "turns";

    public static string TurnId(string session, int turn) => turn == 0 ? session : $"{session}/{turn}";

    /// <summary>
    /// Output <paramref name="index"/> of a request with several outputs (n, best_of or num_beams &gt; 1):
    /// its token log in the session store and its checkpoints in the cache manager, apart from the other
    /// outputs' (the prompt's KV stays under the session itself).
    /// </summary>
    public static string OutputId(string session, int index) => $"{session}#{index}";

    /// <summary>How many outputs a request with these parameters keeps apart (1: the session's own log and KV).</summary>
    public static int OutputCount(SamplingParams sampling) =>
        sampling.BeamSearch is { NumBeams: > 1 } ? Math.Max(sampling.N, 1) : Math.Max(Math.Max(sampling.N, sampling.BestOf), 1);

    /// <summary>Whether this record's request had several outputs: Resume and the next turn refuse it.</summary>
    public bool MultiOutput => OutputCount(Sampling) > 1 || Sampling.BeamSearch is { NumBeams: > 1 };

    public static SessionInfo Create(string id, string model, int[] prompt, SamplingParams sampling, string policy, int maxTokens,
        string? kvSession = null, int history = 0, int turn = 0) => new()
    {
        Id = id,
        Model = model,
        KvPolicy = policy,
        PromptTokens = prompt.Length,
        Parameters = new Dictionary<string, string>
        {
            [PromptKey] = Convert.ToBase64String(MemoryMarshal.AsBytes(prompt.AsSpan())),
            [SamplingKey] = Convert.ToBase64String(sampling.ToByteArray()),
            ["seed"] = sampling.Seed.ToString(),
            [MaxTokensKey] = maxTokens.ToString(CultureInfo.InvariantCulture),
            [KvSessionKey] = kvSession ?? id,
            [HistoryKey] = history.ToString(CultureInfo.InvariantCulture),
            [TurnKey] = turn.ToString(CultureInfo.InvariantCulture),
        },
    };

    /// <summary>The record of a stored session, or null when it lacks what a continuation needs.</summary>
    public static SessionRecord? From(SessionInfo info)
    {
        if (!info.Parameters.TryGetValue(PromptKey, out var prompt) || !info.Parameters.TryGetValue(SamplingKey, out var sampling)) return null;
        return new SessionRecord(info.Id,
            MemoryMarshal.Cast<byte, int>(Convert.FromBase64String(prompt)).ToArray(),
            SamplingParams.Parser.ParseFrom(Convert.FromBase64String(sampling)),
            info.KvPolicy,
            info.Parameters.GetValueOrDefault(KvSessionKey, info.Id),
            Int(info, HistoryKey), Int(info, TurnKey), Int(info, MaxTokensKey));
    }

    /// <summary>The number of the session's latest turn.</summary>
    public static int LatestTurn(SessionInfo session) => Int(session, TurnsKey);

    private static int Int(SessionInfo info, string key) =>
        info.Parameters.TryGetValue(key, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : 0;
}
