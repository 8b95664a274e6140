using System.Globalization;

namespace Cluster.Sessions;

/// <summary>
/// Maps <see cref="SessionInfo"/> to the fields of its Redis hash and back. Parameters become
/// fields prefixed "p." so that the hash stays flat and readable with redis-cli HGETALL.
/// Timestamps are Unix milliseconds.
/// </summary>
internal static class SessionHashCodec
{
    private const string ParamPrefix = "p.";

    public static List<KeyValuePair<string, string>> ToFields(SessionInfo s)
    {
        var f = new List<KeyValuePair<string, string>>
        {
            new("id", s.Id),
            new("model", s.Model),
            new("kv_policy", s.KvPolicy),
            new("created_ms", s.CreatedAt.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)),
        };
        f.AddRange(ToFields(new SessionUpdate
        {
            Status = s.Status, PromptTokens = s.PromptTokens, GeneratedTokens = s.GeneratedTokens,
            PrefillWorker = s.PrefillWorker, DecodeWorker = s.DecodeWorker,
            CheckpointId = s.CheckpointId, CheckpointTokenIndex = s.CheckpointTokenIndex, FinishReason = s.FinishReason,
        }, s.UpdatedAt));
        foreach (var (k, v) in s.Parameters) f.Add(new(ParamPrefix + k, v));
        return f;
    }

    public static List<KeyValuePair<string, string>> ToFields(SessionUpdate u, DateTimeOffset now)
    {
        var f = new List<KeyValuePair<string, string>> { new("updated_ms", Num(now.ToUnixTimeMilliseconds())) };
        if (u.Status is { } st) f.Add(new("status", st.ToString().ToLowerInvariant()));
        if (u.PromptTokens is { } pt) f.Add(new("prompt_tokens", Num(pt)));
        if (u.GeneratedTokens is { } gt) f.Add(new("generated_tokens", Num(gt)));
        if (u.PrefillWorker is { } pw) f.Add(new("prefill_worker", pw));
        if (u.DecodeWorker is { } dw) f.Add(new("decode_worker", dw));
        if (u.CheckpointId is { } ci) f.Add(new("checkpoint_id", ci));
        if (u.CheckpointTokenIndex is { } cx) f.Add(new("checkpoint_index", Num(cx)));
        if (u.FinishReason is { } fr) f.Add(new("finish_reason", fr));
        if (u.Parameters is { } ps)
            foreach (var (k, v) in ps) f.Add(new(ParamPrefix + k, v));
        return f;
    }

    /// <summary>Rebuilds the session; null when the hash is empty (missing key).</summary>
    /// <exception cref="FormatException">A numeric field does not parse (the hash was written by something else).</exception>
    public static SessionInfo? FromFields(Dictionary<string, string> h)
    {
        if (h.Count == 0 || !h.TryGetValue("id", out var id)) return null;
        var parameters = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in h)
            if (k.StartsWith(ParamPrefix, StringComparison.Ordinal)) parameters[k[ParamPrefix.Length..]] = v;
        return new SessionInfo
        {
            Id = id,
            Model = h.GetValueOrDefault("model", ""),
            KvPolicy = h.GetValueOrDefault("kv_policy", "dense"),
            Parameters = parameters,
            Status = Enum.Parse<SessionStatus>(h.GetValueOrDefault("status", "running"), ignoreCase: true),
            PromptTokens = (int)Long(h, "prompt_tokens", 0),
            GeneratedTokens = (int)Long(h, "generated_tokens", 0),
            PrefillWorker = h.GetValueOrDefault("prefill_worker"),
            DecodeWorker = h.GetValueOrDefault("decode_worker"),
            CheckpointId = h.GetValueOrDefault("checkpoint_id"),
            CheckpointTokenIndex = Long(h, "checkpoint_index", -1),
            FinishReason = h.GetValueOrDefault("finish_reason"),
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(Long(h, "created_ms", 0)),
            UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(Long(h, "updated_ms", 0)),
        };
    }

    private static long Long(Dictionary<string, string> h, string key, long fallback) =>
        h.TryGetValue(key, out var v) ? long.Parse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) : fallback;

    private static string Num(long v) => v.ToString(CultureInfo.InvariantCulture);
}
