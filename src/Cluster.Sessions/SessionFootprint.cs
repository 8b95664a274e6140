namespace Cluster.Sessions;

/// <summary>
/// An estimate of the managed memory one in-process session holds, for <see cref="InMemorySessionStore"/>'s
/// byte bound. Not exact (the runtime's object layout is not visible from C#), but proportional to what
/// grows: strings at 2 bytes a character plus their header, 24 bytes per token entry in the log's list,
/// a fixed cost per dictionary entry. The gateway's prompt is stored base64 in the parameters, so a
/// 1,000-token prompt weighs about 11 KB here, which is what dominates a session.
/// </summary>
public static class SessionFootprint
{
    /// <summary>A slot with nothing in it: the slot, its dictionary entry, its list and signal.</summary>
    public const long Slot = 256;

    private const long ObjectHeader = 24;
    private const long DictionaryEntry = 48;

    /// <summary>A string of <paramref name="s"/>'s length (0 for null).</summary>
    public static long Of(string? s) => s is null ? 0 : ObjectHeader + 2L * s.Length;

    /// <summary>One entry of a token log: the struct in the list, and its text if any.</summary>
    public static long Of(TokenEntry token) => 24 + Of(token.Text);

    /// <summary>A session's metadata: the record, its strings and its parameters.</summary>
    public static long Of(SessionInfo info)
    {
        long bytes = 160 + Of(info.Id) + Of(info.Model) + Of(info.KvPolicy) + Of(info.PrefillWorker)
                     + Of(info.DecodeWorker) + Of(info.CheckpointId) + Of(info.FinishReason);
        foreach (var (k, v) in info.Parameters) bytes += DictionaryEntry + Of(k) + Of(v);
        return bytes;
    }
}
