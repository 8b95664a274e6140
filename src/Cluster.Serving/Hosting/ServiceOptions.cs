using System.Globalization;
using System.Reflection;

namespace Cluster.Serving.Hosting;

/// <summary>Marks a <see cref="ServiceOptions"/> property as a command-line option and says which services read it.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class OptionAttribute(string name, string help, params ServiceRole[] roles) : Attribute
{
    /// <summary>"--grpc-port" style name; the environment variable is <see cref="EnvironmentVariable"/>.</summary>
    public string Name { get; } = name;
    public string Help { get; } = help;

    /// <summary>Services that read the option (empty: all).</summary>
    public ServiceRole[] Roles { get; } = roles;

    /// <summary>LLM_ + the name without dashes, upper case, '-' as '_': --grpc-port = LLM_GRPC_PORT.</summary>
    public string EnvironmentVariable => "LLM_" + Name.TrimStart('-').Replace('-', '_').ToUpperInvariant();
}

/// <summary>
/// Every setting of every service, with its default, in one place (docs/SERVICES.md documents the
/// same table; the deploy tests check Dockerfiles, compose, Helm and manifests against it). Values
/// come from the command line, else from LLM_* environment variables, else the defaults here.
/// </summary>
public sealed class ServiceOptions
{
    public ServiceOptions(ServiceRole role)
    {
        Role = role;
        GrpcPort = role.DefaultGrpcPort();
        HttpPort = role.DefaultHttpPort();
    }

    public ServiceRole Role { get; }

    [Option("--host", "address to bind both ports on")]
    public string Host { get; set; } = "0.0.0.0";

    [Option("--grpc-port", "gRPC (HTTP/2 only) port")]
    public int GrpcPort { get; set; }

    [Option("--http-port", "/healthz and /metrics (HTTP/1.1) port")]
    public int HttpPort { get; set; }

    [Option("--model", "llama2.c .bin or Hugging Face folder (default: a generated random-weight model)", ServiceRole.Gateway, ServiceRole.Prefill, ServiceRole.Decode)]
    public string? Model { get; set; }

    [Option("--threads", "CPU threads for matrix products (default: all cores)", ServiceRole.Prefill, ServiceRole.Decode)]
    public int? Threads { get; set; }

    [Option("--weights", "weight format in memory: q8_0, bf16, fp16 or fp32 (default: as stored)", ServiceRole.Prefill, ServiceRole.Decode)]
    public string? Weights { get; set; }

    [Option("--device", "cpu, cuda or cuda:N (docs/GPU.md)", ServiceRole.Prefill, ServiceRole.Decode)]
    public string Device { get; set; } = "cpu";

    [Option("--cache-manager", "cache manager gRPC address", ServiceRole.Gateway, ServiceRole.Prefill, ServiceRole.Decode)]
    public string CacheManager { get; set; } = "http://127.0.0.1:50054";

    [Option("--prefill", "prefill worker addresses, comma-separated", ServiceRole.Gateway)]
    public string Prefill { get; set; } = "http://127.0.0.1:50052";

    [Option("--decode", "decode worker addresses, comma-separated", ServiceRole.Gateway)]
    public string Decode { get; set; } = "http://127.0.0.1:50053";

    [Option("--policy", "default KV policy, e.g. dense, window(256), sink_window(4,252), qfilters(256,32)", ServiceRole.Gateway)]
    public string Policy { get; set; } = "dense";

    [Option("--chat-template", "Jinja chat template (a file, or the template itself) replacing the model's own", ServiceRole.Gateway)]
    public string? ChatTemplate { get; set; }

    [Option("--redis", "host:port of the Redis session store (default: in-process store)", ServiceRole.Gateway)]
    public string? Redis { get; set; }

    [Option("--max-batch", "most sequences in one decode step, and admitted at once (running or preempted)", ServiceRole.Decode)]
    public int MaxBatch { get; set; } = 32;

    [Option("--kv-memory", "KV memory budget in MiB for the sequences decoding together; a sequence reserves its cache's full size (tokens so far + max_tokens, or its policy's budget) before it joins", ServiceRole.Decode)]
    public int KvMemoryMb { get; set; } = 4096;

    [Option("--max-queue", "sequences that may wait for KV room; beyond it a request is refused with RESOURCE_EXHAUSTED", ServiceRole.Decode)]
    public int MaxQueue { get; set; } = 256;

    [Option("--resident-kv", "most MiB of the KV budget (--kv-memory) that finished conversations' caches may keep while no request needs the room, so that the next turn routed back to this worker needs no transfer (least recently kept evicted first; 0: keep none)", ServiceRole.Decode)]
    public int ResidentKvMb { get; set; } = 256;

    [Option("--max-local-prefill", "a conversation's later turn with at most this many new tokens skips prefill: the decode worker that holds the conversation's KV runs them (0: every turn is prefilled on a prefill worker)", ServiceRole.Gateway)]
    public int MaxLocalPrefill { get; set; } = 256;

    [Option("--kv-prefetch", "a new request's decode worker is chosen when its prefill starts and fetches the prompt's KV while prefill runs (following the put layer by layer), so decode starts without a transfer; false: it fetches when decode starts", ServiceRole.Gateway)]
    public bool KvPrefetch { get; set; } = true;

    [Option("--checkpoint-every", "tokens between KV checkpoints to the cache manager", ServiceRole.Decode)]
    public int CheckpointEvery { get; set; } = 64;

    [Option("--layer-streaming", "send a new prompt's KV layer by layer while the prefill runs (the transfer overlaps the later layers); false: send it after the pass", ServiceRole.Prefill)]
    public bool LayerStreaming { get; set; } = true;

    [Option("--layer-streaming-min-tokens", "prompts shorter than this send their KV after the pass even with --layer-streaming (the put is opened before the pass either way, so a decode worker's prefetch waits for it and follows it): streaming costs the pass work for every layer on cores it may share with the cache manager and decode, which a short prompt's small transfer after the pass does not repay (0: stream every prompt)", ServiceRole.Prefill)]
    public int LayerStreamingMinTokens { get; set; } = 1024;

    [Option("--kv-dtype", "KV precision this worker writes to the cache manager: fp32 (tokens as a local run), bf16 or fp16 (half the bytes, rounded to nearest even); reads take the dtype the KV was stored in", ServiceRole.Prefill, ServiceRole.Decode)]
    public string KvDtype { get; set; } = "fp32";

    /// <summary><see cref="KvDtype"/> parsed (checked when the options are read).</summary>
    public Engine.KvCache.KvPrecision KvPrecision => Engine.KvCache.KvPrecisions.Parse(KvDtype);

    [Option("--memory-mb", "KV memory budget in MiB", ServiceRole.CacheManager)]
    public int MemoryMb { get; set; } = 1024;

    [Option("--session-ttl", "seconds a finished session's KV and metadata are kept", ServiceRole.CacheManager, ServiceRole.Gateway)]
    public int SessionTtl { get; set; } = 3600;

    [Option("--kv-min-idle", "seconds a session must be idle before it may be evicted for room (least recently used first)", ServiceRole.CacheManager)]
    public int KvMinIdle { get; set; } = 5;

    [Option("--kv-spill", "directory evicted sessions are written to and read back from; everything is spilled there on shutdown (default: none, evicted KV is dropped)", ServiceRole.CacheManager)]
    public string? KvSpill { get; set; }

    [Option("--kv-spill-mb", "most MiB of KV in the --kv-spill directory; the oldest files are deleted beyond it", ServiceRole.CacheManager)]
    public int KvSpillMb { get; set; } = 4096;

    [Option("--qfilters", "q_filters safetensors file for the qfilters policy", ServiceRole.Gateway, ServiceRole.Prefill, ServiceRole.Decode, ServiceRole.CacheManager)]
    public string? QFilters { get; set; }

    [Option("--log-level", "trace, debug, info, warning, error or none (framework request logs only at debug and below)")]
    public string LogLevel { get; set; } = "warning";

    [Option("--otlp-endpoint", "OTLP/HTTP endpoint for traces (default: trace ids are logged)")]
    public string? OtlpEndpoint { get; set; }

    /// <summary>The options that <paramref name="role"/> reads, with their attributes.</summary>
    public static IEnumerable<(PropertyInfo Property, OptionAttribute Option)> For(ServiceRole role) =>
        typeof(ServiceOptions).GetProperties()
            .Select(p => (p, p.GetCustomAttribute<OptionAttribute>()))
            .Where(x => x.Item2 is not null && (x.Item2.Roles.Length == 0 || x.Item2.Roles.Contains(role)))
            .Select(x => (x.p, x.Item2!));

    /// <summary>
    /// Reads options from <paramref name="args"/> ("--name value" or "--name=value") over the
    /// environment over the defaults. Throws <see cref="ArgumentException"/> naming a bad or unknown option.
    /// </summary>
    public static ServiceOptions Parse(ServiceRole role, string[] args, IDictionary<string, string?>? environment = null)
    {
        var options = new ServiceOptions(role);
        var known = For(role).ToDictionary(x => x.Option.Name, x => x);
        foreach (var (property, option) in known.Values)
        {
            var value = environment is null ? Environment.GetEnvironmentVariable(option.EnvironmentVariable)
                : environment.TryGetValue(option.EnvironmentVariable, out var v) ? v : null;
            if (!string.IsNullOrEmpty(value)) Set(options, property, option.EnvironmentVariable, value);
        }
        for (int i = 0; i < args.Length; i++)
        {
            var (name, value) = args[i].Split('=', 2) is [var n, var val] ? (n, val) : (args[i], i + 1 < args.Length ? args[++i] : null);
            if (!known.TryGetValue(name, out var entry))
                throw new ArgumentException($"unknown option '{name}' for {role.Name()}; known: {string.Join(", ", known.Keys)}");
            Set(options, entry.Property, name, value ?? throw new ArgumentException($"option {name} needs a value"));
        }
        _ = options.KvPrecision; // a bad --kv-dtype fails here, naming the option, not at the first transfer
        return options;
    }

    private static void Set(ServiceOptions options, PropertyInfo property, string source, string value)
    {
        var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
        object parsed;
        if (type == typeof(int))
        {
            if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < 0)
                throw new ArgumentException($"{source} must be a non-negative integer, got '{value}'");
            parsed = n;
        }
        else if (type == typeof(bool))
        {
            parsed = value.ToLowerInvariant() switch
            {
                "true" or "1" or "on" => true,
                "false" or "0" or "off" => false,
                _ => throw new ArgumentException($"{source} must be true or false, got '{value}'"),
            };
        }
        else parsed = value;
        property.SetValue(options, parsed);
    }

    /// <summary>Comma-separated addresses as URIs; throws naming the option for a malformed one.</summary>
    public static IReadOnlyList<Uri> Addresses(string list, string option) =>
        list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(a => Uri.TryCreate(a, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"
                ? u
                : throw new ArgumentException($"{option}: '{a}' is not an http:// address"))
            .ToList();
}
