using System.Runtime.InteropServices;
using Cluster.Redis.Sessions;
using Google.Protobuf;
using LlmCluster.V1;

namespace Cluster.Gateway;

/// <summary>
/// What a session must keep so that any gateway can continue its stream: the prompt's token ids and
/// the sampling parameters with the resolved seed, stored in the session's metadata (and so in Redis).
/// </summary>
internal sealed record SessionRecord(string Id, int[] Prompt, SamplingParams Sampling, string Policy)
{
    private const string PromptKey = "prompt_ids", SamplingKey = "sampling";

    public static SessionInfo Create(string id, string model, int[] prompt, SamplingParams sampling, string policy, int maxTokens) => new()
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
            ["max_tokens"] = maxTokens.ToString(),
        },
    };

    /// <summary>The record of a stored session, or null when it lacks what a continuation needs.</summary>
    public static SessionRecord? From(SessionInfo info)
    {
        if (!info.Parameters.TryGetValue(PromptKey, out var prompt) || !info.Parameters.TryGetValue(SamplingKey, out var sampling)) return null;
        return new SessionRecord(info.Id,
            MemoryMarshal.Cast<byte, int>(Convert.FromBase64String(prompt)).ToArray(),
            SamplingParams.Parser.ParseFrom(Convert.FromBase64String(sampling)),
            info.KvPolicy);
    }
}
