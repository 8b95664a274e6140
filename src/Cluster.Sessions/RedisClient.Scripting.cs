using System.Security.Cryptography;
using System.Text;

namespace Cluster.Redis;

/// <summary>A Lua script with its SHA1, so that it is sent in full only when the server does not have it cached.</summary>
public sealed class RedisScript
{
    public RedisScript(string body)
    {
        Body = body;
        Sha1 = Convert.ToHexStringLower(SHA1.HashData(Encoding.UTF8.GetBytes(body)));
    }

    public string Body { get; }
    public string Sha1 { get; }
}

// Scripting: EVALSHA with a fallback to EVAL.
public sealed partial class RedisClient
{
    /// <summary>
    /// Runs <paramref name="script"/> by EVALSHA; on NOSCRIPT (first use, or a restarted server
    /// whose script cache is empty) sends it once with EVAL, which also caches it.
    /// </summary>
    public async Task<RespValue> EvalAsync(RedisScript script, IReadOnlyList<string> keys, IReadOnlyList<RedisArg> args, CancellationToken ct = default)
    {
        var a = new RedisArg[3 + keys.Count + args.Count];
        a[0] = "EVALSHA";
        a[1] = script.Sha1;
        a[2] = keys.Count;
        for (int i = 0; i < keys.Count; i++) a[3 + i] = keys[i];
        for (int i = 0; i < args.Count; i++) a[3 + keys.Count + i] = args[i];
        try
        {
            return await ExecuteAsync(a, ct).ConfigureAwait(false);
        }
        catch (RedisServerException ex) when (ex.Prefix == "NOSCRIPT")
        {
            a[0] = "EVAL";
            a[1] = script.Body;
            return await ExecuteAsync(a, ct).ConfigureAwait(false);
        }
    }
}
